import { IDBFactory, IDBObjectStore } from "fake-indexeddb";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createVault, KEY_ID, KEYS_STORE, OWNER_ID, RECORDS_STORE, VaultError, type DataClass, type Vault } from "../src/index.js";
import { MemoryStorage, QuotaStorage } from "./helpers.js";

const JWT =
  "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlhdCI6MTUxNjIzOTAyMn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";

let factory: IDBFactory;
let storage: QuotaStorage;
let vault: Vault;

/** A vault on the test's IndexedDB and localStorage (a page load), bound to `owner` unless it is null. */
async function openVault(owner: string | null = "alice", dbName?: string): Promise<Vault> {
  const opened = createVault({ indexedDB: factory, localStorage: storage, ...(dbName ? { dbName } : {}) });
  if (owner !== null) await opened.bindTo(owner);
  return opened;
}

beforeEach(async () => {
  factory = new IDBFactory();
  storage = new QuotaStorage();
  vault = await openVault();
  return () => vault.close();
});
afterEach(() => {
  vi.restoreAllMocks();
});

function rawDb(name = "portcullis-vault"): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = factory.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function req<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function rawGet(store: string, key: string): Promise<any> {
  const db = await rawDb();
  try {
    return await req(db.transaction(store, "readonly").objectStore(store).get(key));
  } finally {
    db.close();
  }
}

async function rawPut(store: string, key: string, value: unknown): Promise<void> {
  const db = await rawDb();
  await req(db.transaction(store, "readwrite").objectStore(store).put(value, key));
  db.close();
}

const hex = (b: ArrayBuffer | Uint8Array) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
const sameBytes = (a: ArrayBuffer | Uint8Array, b: ArrayBuffer | Uint8Array) => hex(a) === hex(b);
const asText = (b: ArrayBuffer | Uint8Array) => String.fromCharCode(...new Uint8Array(b)) + new TextDecoder().decode(b);

const note = { title: "Dr. appointment", body: "Tuesday 10:00, bring the X-ray", tags: ["health"] };

describe("classification matrix", () => {
  it("refuses the secret class outright", async () => {
    await expect(vault.put("pw", "hunter2", "secret")).rejects.toBeInstanceOf(VaultError);
    expect(await vault.get("pw")).toBeUndefined();
  });

  it("refuses an unknown class", async () => {
    await expect(vault.put("k", 1, "top-secret" as DataClass)).rejects.toThrow(/unknown data class/);
  });

  it("keeps session-bound data in memory only", async () => {
    await vault.put("draft", { a: 1 }, "session-bound");
    expect(await vault.get("draft")).toEqual({ a: 1 });
    expect(await vault.classOf("draft")).toBe("session-bound");
    expect(storage.length).toBe(0);
    expect(await rawGet(RECORDS_STORE, "draft")).toBeUndefined();
    // A new vault (a reload) does not see it.
    const reloaded = await openVault();
    expect(await reloaded.get("draft")).toBeUndefined();
    reloaded.close();
  });

  it("stores internal data plain in IndexedDB", async () => {
    await vault.put("catalogue", [{ sku: "A1" }], "internal");
    expect(await rawGet(RECORDS_STORE, "catalogue")).toEqual({ cls: "internal", value: [{ sku: "A1" }] });
    expect(storage.length).toBe(0);
    const reloaded = await openVault();
    expect(await reloaded.get("catalogue")).toEqual([{ sku: "A1" }]);
    reloaded.close();
  });

  it("stores public data as JSON in localStorage", async () => {
    await vault.put("theme", { mode: "dark" }, "public");
    expect(storage.getItem("portcullis-vault:theme")).toBe('{"mode":"dark"}');
    expect(await vault.get("theme")).toEqual({ mode: "dark" });
    expect(await vault.classOf("theme")).toBe("public");
    expect(await rawGet(RECORDS_STORE, "theme")).toBeUndefined();
  });

  it("stores confidential data encrypted and decrypts it back, after a reload too", async () => {
    await vault.put("note:1", note, "confidential");
    expect(await vault.get("note:1")).toEqual(note);
    const reloaded = await openVault();
    expect(await reloaded.get("note:1")).toEqual(note);
    expect(await reloaded.classOf("note:1")).toBe("confidential");
    reloaded.close();
    expect(storage.length).toBe(0);
  });

  it("moves a key between classes: a key lives in exactly one place", async () => {
    await vault.put("k", "v1", "public");
    await vault.put("k", "v2", "confidential");
    expect(storage.getItem("portcullis-vault:k")).toBeNull();
    expect(await vault.get("k")).toBe("v2");
    await vault.put("k", "v3", "session-bound");
    expect(await rawGet(RECORDS_STORE, "k")).toBeUndefined();
    expect(await vault.get("k")).toBe("v3");
    await vault.delete("k");
    expect(await vault.get("k")).toBeUndefined();
    expect(await vault.classOf("k")).toBeUndefined();
  });

  it("refuses values that are not JSON-serialisable", async () => {
    await expect(vault.put("f", () => 1, "internal")).rejects.toBeInstanceOf(VaultError);
    await expect(vault.put("u", undefined, "public")).rejects.toBeInstanceOf(VaultError);
  });
});

describe("token refusal in every class", () => {
  const classes: DataClass[] = ["session-bound", "confidential", "internal", "public"];
  const tokenLike: [string, unknown][] = [
    ["a bare JWT", JWT],
    ["a JWT inside a string", `token=${JWT}; path=/`],
    ["a JWT without signature", JWT.slice(0, JWT.lastIndexOf(".") + 1)],
    ["a JWT deep in an object", { user: { profile: { meta: [1, { raw: JWT }] } } }],
    ["a JWT as an object key", { [JWT]: true }],
    ["a bearer header", "Bearer abc.def"],
    ["a lower-case bearer header in an array", [{ headers: { authorization: "bearer 123" } }]],
    ["a JWT behind toJSON", { toJSON: () => ({ t: JWT }) }],
  ];
  for (const cls of classes) {
    it.each(tokenLike)(`${cls}: refuses %s`, async (_name, value) => {
      await expect(vault.put("t", value, cls)).rejects.toThrow(/looks like a token/);
      expect(await vault.get("t")).toBeUndefined();
    });
  }

  it("accepts ordinary strings that merely mention the words", async () => {
    await vault.put("ok", { text: "The Bearer of good news; eyJ is a prefix", n: "a.b.c" }, "internal");
    expect(await vault.get("ok")).toBeTruthy();
  });
});

describe("confidential records at rest", () => {
  it("are ciphertext with a fresh 96-bit IV per record", async () => {
    await vault.put("note:1", note, "confidential");
    await vault.put("note:2", note, "confidential");
    const r1 = await rawGet(RECORDS_STORE, "note:1");
    const r2 = await rawGet(RECORDS_STORE, "note:2");
    expect(r1.cls).toBe("confidential");
    expect(r1.alg).toBe("AES-GCM");
    expect(r1.iv).toBeInstanceOf(Uint8Array);
    expect(r1.iv.byteLength).toBe(12);
    expect(sameBytes(r1.iv, r2.iv)).toBe(false);
    const bytes = new Uint8Array(r1.ciphertext as ArrayBuffer);
    expect(bytes.byteLength).toBe(new TextEncoder().encode(JSON.stringify(note)).byteLength + 16);
    const raw = JSON.stringify(r1) + asText(bytes);
    for (const plain of ["appointment", "X-ray", "health", "Tuesday"]) expect(raw).not.toContain(plain);
    expect(sameBytes(r2.ciphertext, bytes)).toBe(false);
    // Rewriting the same key draws a new IV too.
    await vault.put("note:1", note, "confidential");
    expect(sameBytes((await rawGet(RECORDS_STORE, "note:1")).iv, r1.iv)).toBe(false);
  });

  it("are bound to their key name (AAD): a record copied under another name does not decrypt", async () => {
    await vault.put("note:alice", note, "confidential");
    await rawPut(RECORDS_STORE, "note:mallory", await rawGet(RECORDS_STORE, "note:alice"));
    await expect(vault.get("note:mallory")).rejects.toThrow(VaultError);
    expect(await vault.get("note:alice")).toEqual(note);
  });

  it("detect tampering", async () => {
    await vault.put("n", note, "confidential");
    const record = await rawGet(RECORDS_STORE, "n");
    const flipped = new Uint8Array(record.ciphertext.slice(0));
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    await rawPut(RECORDS_STORE, "n", { ...record, ciphertext: flipped.buffer });
    await expect(vault.get("n")).rejects.toThrow(/does not decrypt/);
  });

  it("use one non-extractable AES-GCM key kept in IndexedDB", async () => {
    await vault.put("a", 1, "confidential");
    await vault.put("b", 2, "confidential");
    const key = (await rawGet(KEYS_STORE, KEY_ID)) as CryptoKey;
    expect(key).toBeInstanceOf(CryptoKey);
    expect(key.extractable).toBe(false);
    expect(key.algorithm).toMatchObject({ name: "AES-GCM", length: 256 });
    expect([...key.usages].sort()).toEqual(["decrypt", "encrypt"]);
    await expect(crypto.subtle.exportKey("raw", key)).rejects.toThrow();
    await expect(crypto.subtle.exportKey("jwk", key)).rejects.toThrow();
    const db = await rawDb();
    // The key, and the owner record beside it.
    expect((await req(db.transaction(KEYS_STORE).objectStore(KEYS_STORE).getAllKeys())).sort()).toEqual([KEY_ID, OWNER_ID]);
    db.close();
  });

  it("a key of another vault database opens nothing", async () => {
    await vault.put("n", note, "confidential");
    const other = await openVault("alice", "other");
    await other.put("x", 1, "confidential");
    const record = await rawGet(RECORDS_STORE, "n");
    const otherDb = await rawDb("other");
    await req(otherDb.transaction(RECORDS_STORE, "readwrite").objectStore(RECORDS_STORE).put(record, "n"));
    otherDb.close();
    await expect(other.get("n")).rejects.toThrow(VaultError);
    other.close();
  });
});

describe("clear()", () => {
  it("wipes session-bound, confidential and internal data and the key, keeps public", async () => {
    await vault.put("s", 1, "session-bound");
    await vault.put("c", 2, "confidential");
    await vault.put("i", 3, "internal");
    await vault.put("p", 4, "public");
    storage.setItem("unrelated", "kept");
    await vault.clear();
    expect(await vault.get("s")).toBeUndefined();
    expect(await vault.get("c")).toBeUndefined();
    expect(await vault.get("i")).toBeUndefined();
    expect(await vault.get("p")).toBe(4);
    expect(storage.getItem("unrelated")).toBe("kept");
    expect(await rawGet(KEYS_STORE, KEY_ID)).toBeUndefined();
    expect(await rawGet(KEYS_STORE, OWNER_ID)).toBeUndefined();
    const db = await rawDb();
    expect(await req(db.transaction(RECORDS_STORE).objectStore(RECORDS_STORE).count())).toBe(0);
    db.close();
    // It is unbound now: nothing confidential until it is bound again, then under a new key.
    await expect(vault.put("c", 5, "confidential")).rejects.toThrow(/not bound/);
    await vault.bindTo("alice");
    await vault.put("c", 5, "confidential");
    expect(await vault.get("c")).toBe(5);
    expect(await rawGet(KEYS_STORE, KEY_ID)).toBeInstanceOf(CryptoKey);
  });
});

describe("bound to a user", () => {
  it("the next user on this browser never sees the previous one's data (the session ended without a sign-out)", async () => {
    await vault.put("notes", note, "confidential");
    await vault.put("cache", [1, 2], "internal");
    await vault.put("draft", "unsaved", "session-bound");
    await vault.put("theme", "dark", "public");
    vault.close(); // alice's session times out; no clear(); later, bob signs in on the same browser
    const bobs = createVault({ indexedDB: factory, localStorage: storage });
    await bobs.bindTo("bob");
    expect(await bobs.get("notes")).toBeUndefined();
    expect(await bobs.get("cache")).toBeUndefined();
    expect(await bobs.get("draft")).toBeUndefined();
    expect(await bobs.get("theme")).toBe("dark"); // public: holds nothing about the user
    expect(await rawGet(RECORDS_STORE, "notes")).toBeUndefined();
    expect(await rawGet(KEYS_STORE, KEY_ID)).toBeUndefined(); // alice's key is gone too
    await bobs.put("notes", { mine: true }, "confidential");
    expect(await bobs.get("notes")).toEqual({ mine: true });
    bobs.close();
  });

  it("the same user finds their data again, after a reload", async () => {
    await vault.put("notes", note, "confidential");
    const reloaded = await openVault("alice");
    expect(await reloaded.get("notes")).toEqual(note);
    reloaded.close();
  });

  it("keeps a hash of the subject, not the subject, beside the key", async () => {
    await vault.put("n", 1, "confidential");
    const owner = await rawGet(KEYS_STORE, OWNER_ID);
    expect(owner.owner).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(owner)).not.toContain("alice");
  });

  it("wipes data of no recorded owner (written before binding existed) when first bound", async () => {
    await rawPut(RECORDS_STORE, "legacy", { cls: "internal", value: "someone's" });
    const db = await rawDb();
    await req(db.transaction(KEYS_STORE, "readwrite").objectStore(KEYS_STORE).delete(OWNER_ID));
    db.close();
    const next = await openVault("alice");
    expect(await next.get("legacy")).toBeUndefined();
    next.close();
  });

  it("before it is bound: refuses to read or write confidential and internal data; public and session-bound work", async () => {
    await vault.put("notes", note, "confidential");
    await vault.put("cache", 1, "internal");
    const unbound = createVault({ indexedDB: factory, localStorage: storage });
    await expect(unbound.get("notes")).rejects.toThrow(/not bound/);
    await expect(unbound.classOf("cache")).rejects.toThrow(/not bound/);
    await expect(unbound.put("x", 1, "confidential")).rejects.toThrow(VaultError);
    await expect(unbound.put("x", 1, "internal")).rejects.toThrow(VaultError);
    await unbound.put("theme", "dark", "public");
    await unbound.put("draft", "d", "session-bound");
    expect(await unbound.get("theme")).toBe("dark");
    expect(await unbound.get("draft")).toBe("d");
    expect(await unbound.get("absent")).toBeUndefined();
    unbound.close();
  });

  it("binding to another user drops the page's session-bound data as well", async () => {
    await vault.put("draft", "alice's", "session-bound");
    await vault.bindTo("alice");
    expect(await vault.get("draft")).toBe("alice's");
    await vault.bindTo("bob");
    expect(await vault.get("draft")).toBeUndefined();
  });

  it("refuses an empty subject", async () => {
    await expect(vault.bindTo("")).rejects.toBeInstanceOf(VaultError);
  });

  it("a tab whose vault was cleared or rebound elsewhere reads and writes nothing more", async () => {
    await vault.put("notes", note, "confidential");
    const otherTab = await openVault("alice");
    await otherTab.clear(); // sign-out in the other tab
    await otherTab.bindTo("bob");
    await otherTab.put("notes", { bob: true }, "confidential");
    await expect(vault.put("notes", note, "confidential")).rejects.toThrow(/another tab|bind it again/);
    await expect(vault.get("notes")).rejects.toThrow(/not bound/);
    expect(await otherTab.get("notes")).toEqual({ bob: true });
    otherTab.close();
  });

  it("resumeLastOwner(): offline, the last owner's data opens without a session; nothing to resume after clear()", async () => {
    await vault.put("notes", note, "confidential");
    const offline = await openVault(null);
    expect(await offline.resumeLastOwner()).toBe(true);
    expect(await offline.get("notes")).toEqual(note);
    await offline.put("notes", { more: 1 }, "confidential");
    expect(await vault.get("notes")).toEqual({ more: 1 }); // the same binding
    await offline.clear();
    const later = await openVault(null);
    expect(await later.resumeLastOwner()).toBe(false);
    await expect(later.put("notes", note, "confidential")).rejects.toThrow(/not bound/);
    later.close();
    offline.close();
  });
});

describe("put is all or nothing", () => {
  it("a public put that exceeds the quota keeps the old value and throws VaultError", async () => {
    await vault.put("theme", "dark", "public");
    storage.full = true;
    const error = await vault.put("theme", "light", "public").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VaultError);
    expect((error as Error).message).toMatch(/quota/i);
    expect(await vault.get("theme")).toBe("dark");
  });

  it("moving a key to public: a failed write leaves it where it was", async () => {
    await vault.put("k", "v1", "confidential");
    storage.full = true;
    await expect(vault.put("k", "v2", "public")).rejects.toBeInstanceOf(VaultError);
    expect(await vault.get("k")).toBe("v1");
    expect(await vault.classOf("k")).toBe("confidential");
  });

  it("an IndexedDB quota error is a VaultError, and the old (public) copy stays", async () => {
    await vault.put("k", "v1", "public");
    vi.spyOn(IDBObjectStore.prototype, "put").mockImplementationOnce(() => {
      throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    });
    const error = await vault.put("k", "v2", "internal").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VaultError);
    expect((error as Error).message).toMatch(/quota/i);
    expect(await vault.get("k")).toBe("v1");
  });

  it("without IndexedDB: session-bound and public data work; the IndexedDB classes say why they cannot", async () => {
    expect("indexedDB" in globalThis).toBe(false);
    const plain = createVault({ localStorage: storage });
    await plain.bindTo("alice");
    await plain.put("theme", "dark", "public");
    await plain.put("draft", "d", "session-bound");
    expect(await plain.get("theme")).toBe("dark");
    expect(await plain.classOf("draft")).toBe("session-bound");
    await plain.put("theme", "light", "session-bound");
    expect(storage.getItem("portcullis-vault:theme")).toBeNull();
    await plain.delete("draft");
    expect(await plain.get("draft")).toBeUndefined();
    await expect(plain.put("n", 1, "confidential")).rejects.toThrow(/IndexedDB is not available/);
    await plain.clear();
    expect(await plain.get("theme")).toBeUndefined();
    plain.close();
  });
});

describe("a stale operation racing this tab's own re-bind", () => {
  /** Tab 2 signs out and alice signs in again there (a new epoch), while tab 1 still holds the old binding. */
  async function twoTabs(): Promise<{ tab1: Vault; tab2: Vault }> {
    const factory = new IDBFactory();
    const storage = new QuotaStorage();
    const tab1 = createVault({ indexedDB: factory, localStorage: storage });
    await tab1.bindTo("alice");
    await tab1.put("notes", { text: "hi" }, "confidential");
    const tab2 = createVault({ indexedDB: factory, localStorage: storage });
    await tab2.bindTo("alice");
    await tab2.clear();
    await tab2.bindTo("alice");
    return { tab1, tab2 };
  }

  for (const cls of ["confidential", "internal"] as const) {
    it(`a failed ${cls} put does not undo the bindTo that completed meanwhile`, async () => {
      const { tab1, tab2 } = await twoTabs();
      const stale = tab1.put("draft", { a: 1 }, cls); // started under the old epoch
      const rebind = tab1.bindTo("alice");
      const [put, bind] = await Promise.allSettled([stale, rebind]);
      expect(bind.status).toBe("fulfilled");
      expect(put.status).toBe("rejected");
      await expect(tab1.put("after", { b: 1 }, "internal")).resolves.toBeUndefined();
      tab1.close();
      tab2.close();
    });
  }
});
