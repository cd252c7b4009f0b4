import { CSRF_HEADER, SAFE_METHODS, clientInternals, type PortcullisClient } from "./client.js";
import { PROBLEM_CSRF } from "./problem.js";

/** The part of an Axios request config this adapter reads and writes (structurally typed: Axios is not imported). */
export interface AxiosLikeConfig {
  url?: string;
  baseURL?: string;
  method?: string;
  headers?: unknown;
  data?: unknown;
  withCredentials?: boolean;
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
 * Adds request and response interceptors to an Axios instance with the client's rules: `X-CSRF-Token` on unsafe
 * methods to the same origin only, cookies only to the same origin (`withCredentials: false`), one retry after a
 * CSRF 403 (replayable bodies only), the `session-expired` event on a same-origin 401. Returns a detach function.
 */
export function attachAxios(axios: AxiosLikeInstance, client: PortcullisClient): () => void {
  const internals = clientInternals(client);

  const needsToken = (config: AxiosLikeConfig) =>
    internals.isSameOrigin(fullUrl(config)) && !SAFE_METHODS.has((config.method ?? "get").toUpperCase());

  const requestId = axios.interceptors.request.use(async (config: AxiosLikeConfig) => {
    config.withCredentials = false;
    if (needsToken(config)) {
      const token = await internals.ensureToken();
      if (token) setHeader(config, CSRF_HEADER, token);
    }
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
      if (status === 401 && sameOrigin) internals.sessionExpired();
      throw error;
    },
  );

  return () => {
    axios.interceptors.request.eject?.(requestId);
    axios.interceptors.response.eject?.(responseId);
  };
}
