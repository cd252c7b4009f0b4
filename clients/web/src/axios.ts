import { CSRF_HEADER, SAFE_METHODS, clientInternals, tokenRedirectMode, type PortcullisClient } from "./client.js";
import { PROBLEM_CSRF, PROBLEM_UNAUTHENTICATED } from "./problem.js";

/** The part of an Axios request config this adapter reads and writes (structurally typed: Axios is not imported). */
export interface AxiosLikeConfig {
  url?: string;
  baseURL?: string;
  method?: string;
  headers?: unknown;
  data?: unknown;
  withCredentials?: boolean;
  /** Passed to `fetch` by Axios's fetch adapter (axios >= 1.7); the XHR adapter ignores it. */
  fetchOptions?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface AxiosLikeError {
  config?: AxiosLikeConfig;
  response?: { status: number; data?: unknown };
}

/** The part of an Axios instance this adapter uses. */
export interface AxiosLikeInstance {
  interceptors: {
    request: { use(onFulfilled: (config: any) => any, onRejected?: (error: any) => any): number; eject?(id: number): void };
    response: { use(onFulfilled: (response: any) => any, onRejected?: (error: any) => any): number; eject?(id: number): void };
  };
  request(config: any): Promise<unknown>;
}

// A string key (Axios's mergeConfig keeps unknown string keys, not symbols).
const RETRIED = "__portcullisCsrfRetried";

/** Axios serialises objects and arrays itself; only streams cannot be sent twice. */
function replayable(data: unknown): boolean {
  if (data === null || typeof data !== "object") return true;
  if (typeof ReadableStream !== "undefined" && data instanceof ReadableStream) return false;
  const d = data as { pipe?: unknown; getReader?: unknown };
  return typeof d.pipe !== "function" && typeof d.getReader !== "function";
}

function fullUrl(config: AxiosLikeConfig): string {
  const url = config.url ?? "";
  if (/^([a-z][a-z\d+\-.]*:)?\/\//i.test(url) || !config.baseURL) return url;
  return `${config.baseURL.replace(/\/+$/, "")}/${url.replace(/^\/+/, "")}`;
}

function setHeader(config: AxiosLikeConfig, name: string, value: string): void {
  const headers = config.headers as { set?: (n: string, v: string) => void } | Record<string, unknown> | undefined;
  if (headers && typeof (headers as { set?: unknown }).set === "function") {
    (headers as { set: (n: string, v: string) => void }).set(name, value);
  } else {
    config.headers = { ...((headers as Record<string, unknown> | undefined) ?? {}), [name]: value };
  }
}

function problemType(data: unknown): string | undefined {
  let body = data;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  if (body !== null && typeof body === "object" && typeof (body as { type?: unknown }).type === "string") {
    return (body as { type: string }).type;
  }
  return undefined;
}

/**
 * Cookies to the same origin only. Same origin: `withCredentials` is left unset, because XHR sends same-origin
 * cookies whatever it says, but Axios's fetch adapter turns `false` into `credentials: "omit"` (no session cookie,
 * every request a 401); unset, it uses `"same-origin"`. Another origin: `withCredentials: false` (XHR) and
 * `"omit"` (fetch). `fetchOptions.credentials` says the same for Axios versions that pass it on to `fetch`.
 */
function applyCredentials(config: AxiosLikeConfig, fetchOptions: Record<string, unknown>, sameOrigin: boolean): void {
  if (sameOrigin) {
    delete config.withCredentials;
    fetchOptions.credentials = "same-origin";
  } else {
    config.withCredentials = false;
    fetchOptions.credentials = "omit";
  }
}

/** A copy of the caller's `fetchOptions` (it may be shared, e.g. from the instance defaults: never mutated). */
function ownFetchOptions(config: AxiosLikeConfig): Record<string, unknown> {
  const given = config.fetchOptions;
  return given !== null && typeof given === "object" ? { ...given } : {};
}

/**
 * Adds request and response interceptors to an Axios instance with the client's rules: `X-CSRF-Token` on unsafe
 * methods to the same origin only, cookies only to the same origin, one retry after a CSRF 403 (replayable bodies
 * only), the `session-expired` event on a same-origin 401. Returns a detach function.
 *
 * Redirects: with Axios's fetch adapter (`adapter: "fetch"`, axios >= 1.7) a request that may carry the token gets
 * `fetchOptions.redirect: "error"` (a caller's `"manual"` is kept), so it never follows a redirect, as with
 * `client.fetch`. The XHR adapter (Axios's default in browsers) cannot be stopped from following one, and browsers
 * keep custom headers across a 307/308, even to another origin. The gateway passes its upstreams' redirects
 * through, so an upstream that redirects an unsafe request elsewhere would hand the token over; when the gateway
 * serves the app, its default CSP (`connect-src` falls back to `default-src 'self'`) makes the browser refuse to
 * follow it to another origin. Prefer the fetch adapter, and keep other origins out of `connect-src` unless they need to be there.
 */
export function attachAxios(axios: AxiosLikeInstance, client: PortcullisClient): () => void {
  const internals = clientInternals(client);

  const needsToken = (config: AxiosLikeConfig) =>
    internals.isSameOrigin(fullUrl(config)) && !SAFE_METHODS.has((config.method ?? "get").toUpperCase());

  const requestId = axios.interceptors.request.use(async (config: AxiosLikeConfig) => {
    const fetchOptions = ownFetchOptions(config);
    applyCredentials(config, fetchOptions, internals.isSameOrigin(fullUrl(config)));
    if (needsToken(config)) {
      fetchOptions.redirect = tokenRedirectMode(fetchOptions.redirect as RequestRedirect | undefined);
      const token = await internals.ensureToken();
      if (token) setHeader(config, CSRF_HEADER, token);
    }
    config.fetchOptions = fetchOptions;
    return config;
  });

  const responseId = axios.interceptors.response.use(
    (response: unknown) => response,
    async (error: AxiosLikeError) => {
      const config = error?.config;
      const status = error?.response?.status;
      if (!config || status === undefined) throw error;
      const sameOrigin = internals.isSameOrigin(fullUrl(config));
      if (
        status === 403 &&
        needsToken(config) &&
        !config[RETRIED] &&
        replayable(config.data) &&
        problemType(error.response?.data) === PROBLEM_CSRF
      ) {
        const token = await internals.refreshToken();
        if (token) {
          config[RETRIED] = true;
          setHeader(config, CSRF_HEADER, token);
          return axios.request(config);
        }
      }
      // The gateway's own 401 only: an upstream's 401 passes through and says nothing about the session.
      if (status === 401 && sameOrigin && problemType(error.response?.data) === PROBLEM_UNAUTHENTICATED) {
        internals.sessionExpired();
      }
      throw error;
    },
  );

  return () => {
    axios.interceptors.request.eject?.(requestId);
    axios.interceptors.response.eject?.(responseId);
  };
}
