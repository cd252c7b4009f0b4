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
  /** Stores a JSON-compatible value under `key` in the place its class allows (moving it out of any other class). */
  put(key: string, value: unknown, cls: DataClass): Promise<void>;
  /** The value under `key`, whichever class holds it; `undefined` when absent. Throws `VaultError` on a tampered record. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** The class `key` is stored in, or `undefined`. */
  classOf(key: string): Promise<DataClass | undefined>;
  delete(key: string): Promise<void>;
  /** Wipes every class but `public` (session-bound, confidential, internal) and drops the encryption key. Call it on logout. */
  clear(): Promise<void>;
  /** Closes the database connection. */
  close(): void;
}

/** IndexedDB layout (documented for tests that inspect it raw). */
export const VAULT_DB_VERSION = 1;
export const RECORDS_STORE = "records";
export const KEYS_STORE = "keys";
export const KEY_ID = "aes-gcm-256/v1";

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

export function createVault(options: VaultOptions = {}): Vault {
  const dbName = options.dbName ?? "portcullis-vault";
  const prefix = `${dbName}:`;
  const memory = new Map<string, unknown>();
  let dbPromise: Promise<IDBDatabase> | null = null;
  let keyPromise: Promise<CryptoKey> | null = null;

  const idb = (): IDBFactory => {
    const factory = options.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!factory) throw new VaultError("IndexedDB is not available");
    return factory;
  };
  const storage = (): Storage => {
    const s = options.localStorage ?? (globalThis as { localStorage?: Storage }).localStorage;
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

  async function readRecord(key: string): Promise<StoredRecord | undefined> {
    const database = await db();
    const tx = database.transaction(RECORDS_STORE, "readonly");
    return (await promisify(tx.objectStore(RECORDS_STORE).get(key))) as StoredRecord | undefined;
  }

  async function writeRecord(key: string, record: StoredRecord | null): Promise<void> {
    const database = await db();
    const tx = database.transaction(RECORDS_STORE, "readwrite");
    const store = tx.objectStore(RECORDS_STORE);
    if (record) store.put(record, key);
    else store.delete(key);
    await done(tx);
  }

  /** The vault's AES-GCM key: generated once, non-extractable, kept in IndexedDB (structured clone keeps it so). */
  function encryptionKey(): Promise<CryptoKey> {
    if (!keyPromise) {
      keyPromise = (async () => {
        const database = await db();
        const existing = (await promisify(database.transaction(KEYS_STORE, "readonly").objectStore(KEYS_STORE).get(KEY_ID))) as
          | CryptoKey
          | undefined;
        if (existing) return existing;
        const generated = await subtle().generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
        try {
          const tx = database.transaction(KEYS_STORE, "readwrite");
          tx.objectStore(KEYS_STORE).add(generated, KEY_ID);
          await done(tx);
          return generated;
        } catch {
          // Another tab stored its key first: use that one.
          const winner = (await promisify(database.transaction(KEYS_STORE, "readonly").objectStore(KEYS_STORE).get(KEY_ID))) as
            | CryptoKey
            | undefined;
          if (!winner) throw new VaultError("could not store the vault key");
          return winner;
        }
      })();
      keyPromise.catch(() => {
        keyPromise = null;
      });
    }
    return keyPromise;
  }

  function serialize(value: unknown): string {
    const json = JSON.stringify(value);
    if (json === undefined) throw new VaultError("the value is not JSON-serialisable");
    return json;
  }

  async function removeEverywhere(key: string): Promise<void> {
    memory.delete(key);
    storage().removeItem(prefix + key);
    await writeRecord(key, null);
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
    switch (cls) {
      case "session-bound": {
        await removeEverywhere(key);
        memory.set(key, copy);
        return;
      }
      case "public": {
        await removeEverywhere(key);
        storage().setItem(prefix + key, json);
        return;
      }
      case "internal": {
        memory.delete(key);
        storage().removeItem(prefix + key);
        await writeRecord(key, { cls: "internal", value: copy });
        return;
      }
      case "confidential": {
        const plaintext = encoder.encode(json);
        const cryptoKey = await encryptionKey();
        const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
        const ciphertext = await subtle().encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(key), tagLength: 128 }, cryptoKey, plaintext);
        memory.delete(key);
        storage().removeItem(prefix + key);
        await writeRecord(key, { cls: "confidential", alg: "AES-GCM", iv, ciphertext });
        return;
      }
    }
  }

  async function get<T = unknown>(key: string): Promise<T | undefined> {
    if (memory.has(key)) return memory.get(key) as T;
    const record = await readRecord(key);
    if (record?.cls === "internal") return record.value as T;
    if (record?.cls === "confidential") {
      const cryptoKey = await encryptionKey();
      let plaintext: ArrayBuffer;
      try {
        plaintext = await subtle().decrypt(
          { name: "AES-GCM", iv: record.iv as Uint8Array<ArrayBuffer>, additionalData: encoder.encode(key), tagLength: 128 },
          cryptoKey,
          record.ciphertext,
        );
      } catch {
        throw new VaultError(`the confidential record "${key}" does not decrypt (tampered, moved or from another key)`);
      }
      return JSON.parse(decoder.decode(plaintext)) as T;
    }
    const json = storage().getItem(prefix + key);
    return json === null ? undefined : (JSON.parse(json) as T);
  }

  async function classOf(key: string): Promise<DataClass | undefined> {
    if (memory.has(key)) return "session-bound";
    const record = await readRecord(key);
    if (record) return record.cls;
    return storage().getItem(prefix + key) === null ? undefined : "public";
  }

  async function clear(): Promise<void> {
    memory.clear();
    const database = await db();
    const tx = database.transaction([RECORDS_STORE, KEYS_STORE], "readwrite");
    tx.objectStore(RECORDS_STORE).clear();
    tx.objectStore(KEYS_STORE).clear();
    keyPromise = null;
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

  return Object.freeze({ put, get, classOf, delete: removeEverywhere, clear, close });
}
