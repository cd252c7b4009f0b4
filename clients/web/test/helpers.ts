import { vi } from "vitest";

export const ORIGIN = "https://app.example";

export interface FakeLocation {
  origin: string;
  href: string;
  pathname: string;
  search: string;
  hash: string;
  assign: ReturnType<typeof vi.fn>;
}

/** Installs a browser-like `location` at `${origin}${path}`. */
export function installLocation(path = "/notes?tab=1#top", origin = ORIGIN): FakeLocation {
  const url = new URL(path, origin);
  const location: FakeLocation = {
    origin: url.origin,
    href: url.href,
    pathname: url.pathname,
    search: url.search,
    hash: url.hash,
    assign: vi.fn(),
  };
  vi.stubGlobal("location", location);
  return location;
}

export interface Call {
  url: string;
  method: string;
  headers: Headers;
  credentials: RequestCredentials | undefined;
  redirect: RequestRedirect | undefined;
  body: unknown;
}

export function json(status: number, body: unknown, contentType = "application/json"): Response {
  return new Response(body === null ? "null" : JSON.stringify(body), { status, headers: { "content-type": contentType } });
}

export function problem(status: number, slug: string): Response {
  return json(status, { type: `urn:portcullis:problem:${slug}`, title: slug, status }, "application/problem+json");
}

/**
 * A fake gateway: `/bff/session` answers with the current token (or 401 when `loggedIn` is false); `/bff/logout`
 * checks the token; everything else goes to `handler`, defaulting to 200 `{ok:true}`.
 */
export function fakeGateway(options: { handler?: (call: Call) => Response | undefined } = {}) {
  const state = { loggedIn: true, token: "token-1", sessionReads: 0, logoutUrl: "https://idp.example/end?client_id=app" as string | null };
  const calls: Call[] = [];
  const fetch = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const request = typeof input === "object" && !(input instanceof URL) ? input : null;
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url, ORIGIN);
    const call: Call = {
      url: url.href,
      method: (init.method ?? request?.method ?? "GET").toUpperCase(),
      headers: new Headers(init.headers ?? request?.headers),
      credentials: init.credentials,
      redirect: init.redirect ?? request?.redirect,
      body: init.body,
    };
    calls.push(call);
    if (url.origin === ORIGIN && url.pathname === "/bff/session") {
      state.sessionReads++;
      if (!state.loggedIn) return problem(401, "unauthenticated");
      return json(200, { authenticated: true, user: { sub: "alice", name: "Alice" }, csrfToken: state.token, expiresAt: 1800000000 });
    }
    if (url.origin === ORIGIN && url.pathname === "/bff/logout") {
      if (call.headers.get("x-csrf-token") !== state.token) return problem(403, "csrf");
      if (!state.loggedIn) return problem(401, "unauthenticated");
      state.loggedIn = false;
      return json(200, { logoutUrl: state.logoutUrl });
    }
    return options.handler?.(call) ?? json(200, { ok: true });
  });
  return { state, calls, fetch: fetch as unknown as typeof globalThis.fetch & typeof fetch };
}

/** A minimal in-memory `Storage` (Node has no localStorage). */
export class MemoryStorage implements Storage {
  #items = new Map<string, string>();
  get length() {
    return this.#items.size;
  }
  clear() {
    this.#items.clear();
  }
  getItem(key: string) {
    return this.#items.get(key) ?? null;
  }
  key(index: number) {
    return [...this.#items.keys()][index] ?? null;
  }
  removeItem(key: string) {
    this.#items.delete(key);
  }
  setItem(key: string, value: string) {
    this.#items.set(key, String(value));
  }
}

/** A `MemoryStorage` whose `setItem` throws what a full browser storage throws, while `full` is set. */
export class QuotaStorage extends MemoryStorage {
  full = false;
  override setItem(key: string, value: string) {
    if (this.full) throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    super.setItem(key, value);
  }
}
