import { PROBLEM_CSRF, PROBLEM_UNAUTHENTICATED, PortcullisError, readProblem } from "./problem.js";

/** The user's session as `GET /bff/session` describes it, without the anti-CSRF token (kept inside the client). */
export interface Session {
  authenticated: true;
  /** The claims the gateway's `oidc.session_claims` allows. */
  user: Record<string, unknown>;
  /** Unix seconds of the session's absolute expiry. */
  expiresAt: number;
}

export interface ClientOptions {
  /** The gateway's BFF prefix. Default `"/bff"`. */
  basePath?: string;
  /** The fetch implementation to use. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Shorthand for `client.on("session-expired", cb)`. */
  onSessionExpired?: () => void;
}

export interface LoginOptions {
  /** `"none"`: silent re-authentication; the provider's answer comes back as `?error=<code>` on `returnTo`. */
  prompt?: "none";
}

export interface LogoutOptions {
  /** Follow the provider's `logoutUrl` when there is one. Default `true`. */
  navigate?: boolean;
}

export interface LogoutResult {
  logoutUrl: string | null;
}

export type ClientEvent = "session-expired" | "logout";

export interface PortcullisClient {
  /** `GET <basePath>/session`: the session, or `null` without one (a 401). Refreshes the in-memory CSRF token. */
  session(): Promise<Session | null>;
  /** Full-page navigation to `<basePath>/login?returnTo=…` (default: the current path). Returns the URL. */
  login(returnTo?: string, options?: LoginOptions): string;
  /** The `error` code a failed (e.g. silent) login left on the current URL, or `null`. */
  loginError(): string | null;
  /** `POST <basePath>/handshake` (when the gateway enables it). Throws `PortcullisError` (401) for bad credentials. */
  handshake(credentials: { username: string; password: string }): Promise<Session>;
  /** `POST <basePath>/logout` with the CSRF token, forgets the token, then follows `logoutUrl` unless `navigate: false`. */
  logout(options?: LogoutOptions): Promise<LogoutResult>;
  /**
   * `fetch` with the gateway's rules: CSRF header (same origin, unsafe methods), one retry on a CSRF 403, the
   * `session-expired` event on the gateway's own 401 (problem type `unauthenticated`; an upstream's 401 passes through).
   * A request that gets the header never follows a redirect (`redirect: "error"`, or the caller's `"manual"`):
   * browsers keep custom headers across a 307 to another origin, so following one would hand the token over.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Subscribes to an event; returns the unsubscribe function. */
  on(event: ClientEvent, listener: () => void): () => void;
}

/** What the Axios adapter needs from a client; never reachable from outside this package. */
export interface ClientInternals {
  /** The token, fetched from `/bff/session` when the client has none; `null` without a session. */
  ensureToken(): Promise<string | null>;
  /** Forgets the token and reads it again (single flight). */
  refreshToken(): Promise<string | null>;
  isSameOrigin(url: string): boolean;
  sessionExpired(): void;
}

const internalsOf = new WeakMap<PortcullisClient, ClientInternals>();

/** @internal */
export function clientInternals(client: PortcullisClient): ClientInternals {
  const internals = internalsOf.get(client);
  if (!internals) throw new TypeError("not a Portcullis client (use createClient())");
  return internals;
}

export const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);
export const CSRF_HEADER = "X-CSRF-Token";

/** Bodies that can be sent twice. A ReadableStream (or anything else) cannot. */
export function isReplayableBody(body: unknown): boolean {
  return (
    body === undefined ||
    body === null ||
    typeof body === "string" ||
    body instanceof URLSearchParams ||
    (typeof FormData !== "undefined" && body instanceof FormData) ||
    (typeof Blob !== "undefined" && body instanceof Blob) ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body)
  );
}

function currentLocation(): Location | undefined {
  return (globalThis as { location?: Location }).location;
}

/** The URL relative URLs resolve against in `fetch` and XHR: the document's base URL (`<base href>`), else the page's. */
function baseUrl(loc: Location): string {
  const baseURI = (globalThis as { document?: { baseURI?: unknown } }).document?.baseURI;
  return typeof baseURI === "string" && baseURI !== "" ? baseURI : loc.href || loc.origin;
}

/**
 * The redirect mode for a request that carries the token: `"error"` (a redirect is a network error), or `"manual"`
 * when the caller asked for it (the browser hands back an opaque response and follows nothing). Never `"follow"`.
 */
export function tokenRedirectMode(asked: RequestRedirect | undefined): RequestRedirect {
  return asked === "manual" ? "manual" : "error";
}

function requestUrl(input: RequestInfo | URL): string {
  if (typeof input === "string") return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

interface SessionJson {
  authenticated?: unknown;
  user?: unknown;
  csrfToken?: unknown;
  expiresAt?: unknown;
}

/** One `GET <basePath>/session`, shared by every concurrent caller: the JSON is parsed once, here. */
interface SessionRead {
  /** Shared: never read its body; hand out `response.clone()` (or use `readProblem`, which clones). */
  response: Response;
  /** The parsed body of a 200, else `null`. */
  json: SessionJson | null;
}

function toSession(json: SessionJson): { session: Session; token: string | null } {
  const user = json.user !== null && typeof json.user === "object" ? (json.user as Record<string, unknown>) : {};
  const expiresAt = typeof json.expiresAt === "number" ? json.expiresAt : 0;
  const token = typeof json.csrfToken === "string" && json.csrfToken !== "" ? json.csrfToken : null;
  return { session: { authenticated: true, user, expiresAt }, token };
}

export function createClient(options: ClientOptions = {}): PortcullisClient {
  const basePath = (options.basePath ?? "/bff").replace(/\/+$/, "");
  const doFetch: typeof fetch = (input, init) => (options.fetch ?? globalThis.fetch)(input, init);

  // The anti-CSRF token: this closure variable is its only home.
  let csrfToken: string | null = null;
  let inflight: Promise<SessionRead> | null = null;
  let expiredNotified = false;
  const listeners = new Map<ClientEvent, Set<() => void>>();

  function emit(event: ClientEvent): void {
    for (const listener of [...(listeners.get(event) ?? [])]) {
      try {
        listener();
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  function sessionExpired(): void {
    csrfToken = null;
    if (expiredNotified) return;
    expiredNotified = true;
    emit("session-expired");
  }

  function isSameOrigin(url: string): boolean {
    const loc = currentLocation();
    if (!loc) {
      // No browser location: only a path-absolute URL is ours.
      return url.startsWith("/") && !url.startsWith("//") && !url.startsWith("/\\");
    }
    try {
      // Resolved as fetch resolves it: a relative URL under a `<base href>` of another origin goes there.
      return new URL(url, baseUrl(loc)).origin === loc.origin;
    } catch {
      return false;
    }
  }

  /**
   * `GET <basePath>/session`, single flight. Updates the token. Every concurrent caller gets the same result, so
   * the body is parsed once here and the shared response's own body is never consumed (callers clone it).
   */
  function fetchSession(): Promise<SessionRead> {
    if (inflight) return inflight;
    const attempt = (async (): Promise<SessionRead> => {
      const response = await doFetch(`${basePath}/session`, {
        method: "GET",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      let json: SessionJson | null = null;
      if (response.status === 200) {
        json = (await response.clone().json()) as SessionJson;
        const { token } = toSession(json);
        csrfToken = token;
        if (token) expiredNotified = false;
      } else if (response.status === 401) {
        csrfToken = null;
      }
      return { response, json };
    })();
    inflight = attempt;
    const clear = () => {
      if (inflight === attempt) inflight = null;
    };
    attempt.then(clear, clear);
    return attempt;
  }

  async function refreshToken(): Promise<string | null> {
    csrfToken = null;
    await fetchSession();
    return csrfToken;
  }

  async function ensureToken(): Promise<string | null> {
    if (csrfToken) return csrfToken;
    return refreshToken();
  }

  async function send(input: RequestInfo | URL, init: RequestInit = {}, notifyExpiry = true): Promise<Response> {
    const request = typeof input === "object" && !(input instanceof URL) ? input : null;
    const url = requestUrl(input);
    const method = (init.method ?? request?.method ?? "GET").toUpperCase();
    const sameOrigin = isSameOrigin(url);
    const needsToken = sameOrigin && !SAFE_METHODS.has(method);
    const replayable = init.body !== undefined ? isReplayableBody(init.body) : request === null || request.body === null;

    // Decided on the URL the caller gave; a redirect could take the request (and its headers) elsewhere, so a
    // request that may carry the token never follows one.
    const redirect = needsToken ? { redirect: tokenRedirectMode(init.redirect ?? request?.redirect) } : {};
    const attempt = async (token: string | null): Promise<Response> => {
      const headers = new Headers(init.headers ?? request?.headers);
      if (needsToken && token) headers.set(CSRF_HEADER, token);
      return doFetch(input, { ...init, method, headers, credentials: "same-origin", ...redirect });
    };

    let token: string | null = null;
    if (needsToken) {
      token = csrfToken;
      if (!token) {
        const { response: sessionResponse } = await fetchSession();
        token = csrfToken;
        if (!token && sessionResponse.status === 401) {
          // No session: the gateway would refuse the request anyway; nothing is sent. The response is shared
          // with every concurrent caller: each gets its own copy to read.
          if (notifyExpiry) sessionExpired();
          return sessionResponse.clone();
        }
      }
    }

    let response = await attempt(token);
    if (needsToken && response.status === 403 && replayable) {
      const problem = await readProblem(response);
      if (problem?.type === PROBLEM_CSRF) {
        const fresh = await refreshToken();
        if (fresh) {
          response = await attempt(fresh);
        }
      }
    }
    // Only the gateway's own 401 means the session is gone: an upstream's 401 ("not your resource") passes through
    // unchanged and must not sign the user out (apps clear their confidential data on this event).
    if (sameOrigin && response.status === 401 && notifyExpiry && (await readProblem(response))?.type === PROBLEM_UNAUTHENTICATED) {
      sessionExpired();
    }
    return response;
  }

  async function session(): Promise<Session | null> {
    const hadToken = csrfToken !== null;
    const { response, json } = await fetchSession();
    if (response.status === 401) {
      // Only a session this client knew of can expire: a 401 on first load is "not signed in", no event.
      if (hadToken) sessionExpired();
      return null;
    }
    if (response.status !== 200 || json === null) {
      throw new PortcullisError(`GET ${basePath}/session failed: ${response.status}`, response.status, await readProblem(response));
    }
    return toSession(json).session;
  }

  function login(returnTo?: string, loginOptions: LoginOptions = {}): string {
    const loc = currentLocation();
    const target = returnTo ?? (loc ? `${loc.pathname}${loc.search}${loc.hash}` : "/");
    const params = new URLSearchParams({ returnTo: target });
    if (loginOptions.prompt !== undefined) params.set("prompt", loginOptions.prompt);
    const url = `${basePath}/login?${params.toString()}`;
    if (loc) loc.assign(url);
    return url;
  }

  function loginError(): string | null {
    const loc = currentLocation();
    return loc ? new URLSearchParams(loc.search).get("error") : null;
  }

  async function handshake(credentials: { username: string; password: string }): Promise<Session> {
    const response = await doFetch(`${basePath}/handshake`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username: credentials.username, password: credentials.password }),
      cache: "no-store",
    });
    if (response.status !== 200) {
      throw new PortcullisError(`POST ${basePath}/handshake failed: ${response.status}`, response.status, await readProblem(response));
    }
    const { session: result, token } = toSession((await response.json()) as SessionJson);
    csrfToken = token;
    expiredNotified = false;
    return result;
  }

  async function logout(logoutOptions: LogoutOptions = {}): Promise<LogoutResult> {
    const response = await send(`${basePath}/logout`, { method: "POST", headers: { Accept: "application/json" }, cache: "no-store" }, false);
    csrfToken = null;
    let logoutUrl: string | null = null;
    if (response.status === 200) {
      const body = (await response.json().catch(() => null)) as { logoutUrl?: unknown } | null;
      logoutUrl = typeof body?.logoutUrl === "string" ? body.logoutUrl : null;
    } else if (response.status !== 401) {
      // 401: there was no session left to end, which is what logout wants.
      throw new PortcullisError(`POST ${basePath}/logout failed: ${response.status}`, response.status, await readProblem(response));
    }
    emit("logout");
    const loc = currentLocation();
    if (logoutUrl && logoutOptions.navigate !== false && loc) loc.assign(logoutUrl);
    return { logoutUrl };
  }

  function on(event: ClientEvent, listener: () => void): () => void {
    let set = listeners.get(event);
    if (!set) listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  if (options.onSessionExpired) on("session-expired", options.onSessionExpired);

  const client: PortcullisClient = Object.freeze({
    session,
    login,
    loginError,
    handshake,
    logout,
    fetch: (input: RequestInfo | URL, init?: RequestInit) => send(input, init),
    on,
  });
  internalsOf.set(client, { ensureToken, refreshToken, isSameOrigin, sessionExpired });
  return client;
}
