import { findTokenLike } from "./classify.js";

/** The data classes of DESIGN.md's classification matrix. */
export type DataClass = "secret" | "session-bound" | "confidential" | "internal" | "public";

export const DATA_CLASSES: readonly DataClass[] = ["secret", "session-bound", "confidential", "internal", "public"];

/** Thrown for anything the classification forbids, and for records that fail to decrypt. */
export class VaultError extends Error {
  override readonly name = "VaultError";
}

export interface VaultOptions {
  /** The IndexedDB database name; also the localStorage key prefix (`<dbName>:`). Default `"portcullis-vault"`. */
  dbName?: string;
  /** Default `globalThis.indexedDB`. */
  indexedDB?: IDBFactory;
  /** Default `globalThis.localStorage`. */
  localStorage?: Storage;
}

export interface Vault {
  /**
   * Binds the vault to the signed-in user: call it with the session's `user.sub` before reading anything. If the
   * vault holds another user's data (or data of no recorded owner), it wipes every class but `public` and drops
   * the encryption key first, so the next user on a browser never sees the previous one's data, however their
   * session ended (sign-out, idle timeout, revocation, back-channel logout). Until it is bound, confidential and
   * internal data can be neither read nor written (`VaultError`); session-bound and public data can.
   */
  bindTo(subject: string): Promise<void>;
  /**
   * Offline only, when who is signed in cannot be checked: binds to whoever the vault was last bound to. Resolves
   * `false` (and stays unbound) when there is no recorded owner, e.g. after `clear()`. Whoever holds the device
   * offline reads that user's data: bind with `bindTo` as soon as the session can be read again.
   */
  resumeLastOwner(): Promise<boolean>;
  /** Stores a JSON-compatible value under `key` in the place its class allows (moving it out of any other class). */
  put(key: string, value: unknown, cls: DataClass): Promise<void>;
  /** The value under `key`, whichever class holds it; `undefined` when absent. Throws `VaultError` on a tampered record. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** The class `key` is stored in, or `undefined`. */
  classOf(key: string): Promise<DataClass | undefined>;
  delete(key: string): Promise<void>;
  /**
   * Wipes every class but `public` (session-bound, confidential, internal), drops the encryption key and the
   * owner, and unbinds. Call it on logout, on `session-expired`, and when a page loads without a session.
   */
  clear(): Promise<void>;
  /** Closes the database connection. */
  close(): void;
}

/** IndexedDB layout (documented for tests that inspect it raw). */
export const VAULT_DB_VERSION = 1;
export const RECORDS_STORE = "records";
export const KEYS_STORE = "keys";
export const KEY_ID = "aes-gcm-256/v1";
/** The `keys` store entry that says whose data the vault holds. */
export const OWNER_ID = "owner/v1";

/**
 * The owner entry: `owner` is the SHA-256 (hex) of the subject with a label (the subject itself is not stored);
 * `epoch` is random, new at each wipe, so a tab notices that another tab cleared or re-bound the vault.
 */
export interface OwnerRecord {
  owner: string;
  epoch: string;
}

/** A record in the `records` store, keyed by the vault key name. */
export type StoredRecord =
  | { cls: "internal"; value: unknown }
  | { cls: "confidential"; alg: "AES-GCM"; iv: Uint8Array; ciphertext: ArrayBuffer };

function promisify<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException("transaction aborted", "AbortError"));
  });
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const OWNER_LABEL = "portcullis-vault-owner/v1\n";

const hex = (bytes: ArrayBuffer | Uint8Array) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

function isOwnerRecord(value: unknown): value is OwnerRecord {
  const v = value as Partial<OwnerRecord> | null | undefined;
  return typeof v?.owner === "string" && typeof v.epoch === "string";
}

function sameOwner(stored: unknown, binding: OwnerRecord): boolean {
  return isOwnerRecord(stored) && stored.owner === binding.owner && stored.epoch === binding.epoch;
}

/** A full storage (localStorage or IndexedDB) as a `VaultError`; anything else unchanged. */
function storageError(error: unknown): unknown {
  const name = (error as { name?: unknown } | null)?.name;
  if (name === "QuotaExceededError" || name === "NS_ERROR_DOM_QUOTA_REACHED") {
    return new VaultError("the browser's storage quota is exhausted; nothing was changed", { cause: error });
  }
  return error;
}

export function createVault(options: VaultOptions = {}): Vault {
  const dbName = options.dbName ?? "portcullis-vault";
  const prefix = `${dbName}:`;
  const memory = new Map<string, unknown>();
  let dbPromise: Promise<IDBDatabase> | null = null;
  let keyPromise: Promise<CryptoKey> | null = null;
  // Whose data this page may read and write; checked against the owner entry whenever a record is read or written.
  let binding: OwnerRecord | null = null;

  const idbFactory = (): IDBFactory | undefined => options.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  const idb = (): IDBFactory => {
    const factory = idbFactory();
    if (!factory) throw new VaultError("IndexedDB is not available");
    return factory;
  };
  const localStore = (): Storage | undefined => options.localStorage ?? (globalThis as { localStorage?: Storage }).localStorage;
  const storage = (): Storage => {
    const s = localStore();
    if (!s) throw new VaultError("localStorage is not available");
    return s;
  };
  const subtle = (): SubtleCrypto => {
    const s = globalThis.crypto?.subtle;
    if (!s) throw new VaultError("WebCrypto is not available (needs a secure context)");
    return s;
  };

  function db(): Promise<IDBDatabase> {
    if (!dbPromise) {
      dbPromise = new Promise<IDBDatabase>((resolve, reject) => {
        const request = idb().open(dbName, VAULT_DB_VERSION);
        request.onupgradeneeded = () => {
          const database = request.result;
          if (!database.objectStoreNames.contains(RECORDS_STORE)) database.createObjectStore(RECORDS_STORE);
          if (!database.objectStoreNames.contains(KEYS_STORE)) database.createObjectStore(KEYS_STORE);
        };
        request.onsuccess = () => {
          const database = request.result;
          database.onversionchange = () => {
            database.close();
            dbPromise = null;
          };
          resolve(database);
        };
        request.onerror = () => reject(request.error);
        request.onblocked = () => reject(new VaultError("the vault database is blocked by another tab"));
      });
      dbPromise.catch(() => {
        dbPromise = null;
      });
    }
    return dbPromise;
  }

  /** Forgets this page's binding and everything held for it (the key, session-bound data). */
  function unbind(): void {
    binding = null;
    keyPromise = null;
    memory.clear();
  }

  function requireBinding(): OwnerRecord {
    if (!binding) throw new VaultError("the vault is not bound to a user: call bindTo(session.user.sub) first");
    return binding;
  }

  /**
   * The owner entry changed under this page: another tab signed out, or bound the vault to someone else. Forgets
   * `stale`, the binding the failed operation started with, only if it is still this page's: a `bindTo` that
   * completed meanwhile stands.
   */
  function rebound(stale: OwnerRecord): VaultError {
    if (binding === stale) unbind();
    return new VaultError("the vault was cleared or bound to another user (in another tab?): bind it again");
  }

  /**
   * A read/write transaction over `stores` (KEYS_STORE among them) that runs `body` only while the owner entry
   * is still `current`, and aborts otherwise. Resolves once committed.
   */
  async function ownedWrite(current: OwnerRecord, stores: string[], body: (tx: IDBTransaction) => void): Promise<void> {
    const database = await db();
    const tx = database.transaction(stores, "readwrite");
    let foreign = false;
    let thrown: unknown;
    const owner = tx.objectStore(KEYS_STORE).get(OWNER_ID);
    owner.onsuccess = () => {
      if (!sameOwner(owner.result, current)) {
        foreign = true;
        tx.abort();
        return;
      }
      try {
        body(tx);
      } catch (error) {
        thrown = error;
        tx.abort();
      }
    };
    try {
      await done(tx);
    } catch (error) {
      if (foreign) throw rebound(current);
      throw storageError(thrown ?? error);
    }
  }

  interface Snapshot {
    record?: StoredRecord;
    owner?: unknown;
    cryptoKey?: CryptoKey;
  }

  /** One consistent read of the owner entry and the key, and of the record under `key` if given. */
  async function snapshot(key?: string): Promise<Snapshot> {
    const database = await db();
    const tx = database.transaction(key === undefined ? [KEYS_STORE] : [RECORDS_STORE, KEYS_STORE], "readonly");
    const keys = tx.objectStore(KEYS_STORE);
    const [owner, cryptoKey, record] = await Promise.all([
      promisify(keys.get(OWNER_ID)),
      promisify(keys.get(KEY_ID)),
      key === undefined ? undefined : promisify(tx.objectStore(RECORDS_STORE).get(key)),
    ]);
    return { record: record as StoredRecord | undefined, owner, cryptoKey: cryptoKey as CryptoKey | undefined };
  }

  /** The IndexedDB record under `key` with its key, if this page's owner may read it; `undefined` when absent. */
  async function readRecord(key: string): Promise<{ record: StoredRecord; cryptoKey?: CryptoKey } | undefined> {
    if (!idbFactory()) return undefined;
    const { record, owner, cryptoKey } = await snapshot(key);
    if (!record) return undefined;
    const current = requireBinding();
    if (!sameOwner(owner, current)) throw rebound(current);
    return cryptoKey ? { record, cryptoKey } : { record };
  }

  function writeRecord(key: string, record: StoredRecord, current: OwnerRecord): Promise<void> {
    return ownedWrite(current, [RECORDS_STORE, KEYS_STORE], (tx) => tx.objectStore(RECORDS_STORE).put(record, key));
  }

  /** Deleting needs no owner: it reveals nothing. Nothing to do without IndexedDB (nothing can be there). */
  async function removeRecord(key: string): Promise<void> {
    if (!idbFactory()) return;
    const database = await db();
    const tx = database.transaction(RECORDS_STORE, "readwrite");
    tx.objectStore(RECORDS_STORE).delete(key);
    await done(tx);
  }

  /** The vault's AES-GCM key: generated once per owner, non-extractable, kept in IndexedDB (structured clone keeps it so). */
  function encryptionKey(current: OwnerRecord): Promise<CryptoKey> {
    if (!keyPromise) {
      keyPromise = (async () => {
        const { owner, cryptoKey } = await snapshot();
        if (!sameOwner(owner, current)) throw rebound(current);
        if (cryptoKey) return cryptoKey;
        const generated = await subtle().generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
        try {
          await ownedWrite(current, [KEYS_STORE], (tx) => tx.objectStore(KEYS_STORE).add(generated, KEY_ID));
          return generated;
        } catch (error) {
          if (error instanceof VaultError) throw error;
          // Another tab stored its key first: use that one.
          const winner = await snapshot();
          if (!sameOwner(winner.owner, current) || !winner.cryptoKey) throw new VaultError("could not store the vault key");
          return winner.cryptoKey;
        }
      })();
      keyPromise.catch(() => {
        keyPromise = null;
      });
    }
    return keyPromise;
  }

  async function ownerHash(subject: string): Promise<string> {
    return hex(await subtle().digest("SHA-256", encoder.encode(OWNER_LABEL + subject)));
  }

  async function bindTo(subject: string): Promise<void> {
    if (typeof subject !== "string" || subject === "") {
      throw new VaultError("the owner must be a non-empty string (the session's user.sub)");
    }
    const owner = await ownerHash(subject);
    // Session-bound data of this page's previous user (or of nobody) is not the new user's either.
    if (binding?.owner !== owner) unbind();
    if (!idbFactory()) {
      // Nothing persisted can belong to anyone else.
      binding = { owner, epoch: "memory" };
      return;
    }
    const database = await db();
    const tx = database.transaction([RECORDS_STORE, KEYS_STORE], "readwrite");
    const keys = tx.objectStore(KEYS_STORE);
    const stored = keys.get(OWNER_ID);
    let bound: OwnerRecord = { owner, epoch: "" };
    stored.onsuccess = () => {
      if (isOwnerRecord(stored.result) && stored.result.owner === owner) {
        bound = { owner, epoch: stored.result.epoch };
        return;
      }
      // Someone else's data, or data of no recorded owner: wiped, key included, before any of it is read.
      tx.objectStore(RECORDS_STORE).clear();
      keys.clear();
      bound = { owner, epoch: hex(globalThis.crypto.getRandomValues(new Uint8Array(16))) };
      keys.put(bound, OWNER_ID);
    };
    try {
      await done(tx);
    } catch (error) {
      throw storageError(error);
    }
    if (binding?.epoch !== bound.epoch) keyPromise = null;
    binding = bound;
  }

  async function resumeLastOwner(): Promise<boolean> {
    if (!idbFactory()) return false;
    const { owner } = await snapshot();
    if (!isOwnerRecord(owner)) return false;
    if (binding?.owner !== owner.owner) unbind();
    if (binding?.epoch !== owner.epoch) keyPromise = null;
    binding = { owner: owner.owner, epoch: owner.epoch };
    return true;
  }

  function serialize(value: unknown): string {
    const json = JSON.stringify(value);
    if (json === undefined) throw new VaultError("the value is not JSON-serialisable");
    return json;
  }

  /**
   * Removes the copies of `key` held by classes other than `kept`. Called after the new copy is written, so a
   * failed write leaves the old value in place; skips the stores that are not available (nothing can be there).
   */
  async function removeOthers(key: string, kept: DataClass | null): Promise<void> {
    if (kept !== "session-bound") memory.delete(key);
    if (kept !== "public") localStore()?.removeItem(prefix + key);
    if (kept !== "confidential" && kept !== "internal") await removeRecord(key);
  }

  function setPublic(key: string, json: string): void {
    try {
      storage().setItem(prefix + key, json);
    } catch (error) {
      throw storageError(error);
    }
  }

  async function encrypt(key: string, json: string, current: OwnerRecord): Promise<StoredRecord> {
    const cryptoKey = await encryptionKey(current);
    const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
    const ciphertext = await subtle().encrypt(
      { name: "AES-GCM", iv, additionalData: encoder.encode(key), tagLength: 128 },
      cryptoKey,
      encoder.encode(json),
    );
    return { cls: "confidential", alg: "AES-GCM", iv, ciphertext };
  }

  async function put(key: string, value: unknown, cls: DataClass): Promise<void> {
    if (typeof key !== "string" || key === "") throw new VaultError("the key must be a non-empty string");
    if (!DATA_CLASSES.includes(cls)) throw new VaultError(`unknown data class: ${String(cls)}`);
    if (cls === "secret") throw new VaultError("secret data (tokens, passwords, client secrets) never lives in the browser");
    // Checked on the JSON form: what is checked is exactly what is stored (toJSON, getters and all).
    const json = serialize(value);
    const copy: unknown = JSON.parse(json);
    const hit = findTokenLike(copy);
    if (hit) throw new VaultError(`refused: ${hit} looks like a token (JWT or bearer); tokens never live in the browser`);
    // The new copy first, then the old ones: a failed write (a full storage) loses nothing.
    switch (cls) {
      case "session-bound":
        memory.set(key, copy);
        break;
      case "public":
        setPublic(key, json);
        break;
      case "internal": {
        const current = requireBinding();
        await writeRecord(key, { cls: "internal", value: copy }, current);
        break;
      }
      case "confidential": {
        const current = requireBinding();
        await writeRecord(key, await encrypt(key, json, current), current);
        break;
      }
    }
    await removeOthers(key, cls);
  }

  async function get<T = unknown>(key: string): Promise<T | undefined> {
    if (memory.has(key)) return memory.get(key) as T;
    const found = await readRecord(key);
    if (found?.record.cls === "internal") return found.record.value as T;
    if (found?.record.cls === "confidential") {
      const { record } = found;
      let plaintext: ArrayBuffer;
      try {
        if (!found.cryptoKey) throw new VaultError("no key");
        plaintext = await subtle().decrypt(
          { name: "AES-GCM", iv: record.iv as Uint8Array<ArrayBuffer>, additionalData: encoder.encode(key), tagLength: 128 },
          found.cryptoKey,
          record.ciphertext,
        );
      } catch {
        throw new VaultError(`the confidential record "${key}" does not decrypt (tampered, moved or from another key)`);
      }
      return JSON.parse(decoder.decode(plaintext)) as T;
    }
    const json = localStore()?.getItem(prefix + key) ?? null;
    return json === null ? undefined : (JSON.parse(json) as T);
  }

  async function classOf(key: string): Promise<DataClass | undefined> {
    if (memory.has(key)) return "session-bound";
    const found = await readRecord(key);
    if (found) return found.record.cls;
    return (localStore()?.getItem(prefix + key) ?? null) === null ? undefined : "public";
  }

  function remove(key: string): Promise<void> {
    return removeOthers(key, null);
  }

  async function clear(): Promise<void> {
    unbind();
    if (!idbFactory()) return;
    const database = await db();
    const tx = database.transaction([RECORDS_STORE, KEYS_STORE], "readwrite");
    tx.objectStore(RECORDS_STORE).clear();
    tx.objectStore(KEYS_STORE).clear();
    await done(tx);
  }

  function close(): void {
    if (dbPromise) {
      const pending = dbPromise;
      dbPromise = null;
      keyPromise = null;
      pending.then((database) => database.close(), () => undefined);
    }
  }

  return Object.freeze({ bindTo, resumeLastOwner, put, get, classOf, delete: remove, clear, close });
}
