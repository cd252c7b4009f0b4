import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { attachAxios, createClient } from "../src/index.js";
import { fakeGateway, installLocation } from "./helpers.js";

interface Config {
  url?: string;
  baseURL?: string;
  method?: string;
  headers: Record<string, string>;
  data?: unknown;
  withCredentials?: boolean;
  fetchOptions?: Record<string, unknown>;
  maxRedirects?: number;
  [key: string]: unknown;
}
interface Reply {
  status: number;
  data?: unknown;
}

/** Just enough of Axios: interceptors (request ones run last-registered first), request(), errors for non-2xx. */
function fakeAxios(adapter: (config: Config) => Reply) {
  const requestInterceptors: (((c: Config) => Config | Promise<Config>) | null)[] = [];
  const responseInterceptors: ([(r: unknown) => unknown, (e: unknown) => unknown] | null)[] = [];
  const sent: Config[] = [];
  const instance = {
    interceptors: {
      request: {
        use: (f: (c: Config) => Config) => requestInterceptors.push(f) - 1,
        eject: (id: number) => void (requestInterceptors[id] = null),
      },
      response: {
        use: (ok: (r: unknown) => unknown, err: (e: unknown) => unknown) => responseInterceptors.push([ok, err]) - 1,
        eject: (id: number) => void (responseInterceptors[id] = null),
      },
    },
    async request(input: Partial<Config>): Promise<unknown> {
      let config: Config = { method: "get", ...input, headers: { ...input.headers } };
      for (const f of [...requestInterceptors].reverse()) if (f) config = await f(config);
      sent.push({ ...config, headers: { ...config.headers } });
      let result: Promise<unknown> = Promise.resolve().then(() => {
        const reply = adapter(config);
        if (reply.status >= 200 && reply.status < 300) return { ...reply, config };
        throw Object.assign(new Error(`Request failed with status code ${reply.status}`), { config, response: { ...reply, config } });
      });
      for (const pair of responseInterceptors) if (pair) result = result.then(pair[0], pair[1]);
      return result;
    },
  };
  return { instance, sent };
}

const csrfProblem = { type: "urn:portcullis:problem:csrf", status: 403 };

beforeEach(() => {
  installLocation();
});
afterEach(() => {
  vi.unstubAllGlobals();
});

describe("attachAxios", () => {
  it("adds the token on unsafe same-origin requests only, and never sends cookies cross-origin", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios(() => ({ status: 200, data: {} }));
    attachAxios(instance, client);
    await instance.request({ url: "/api/orders", method: "post", data: { a: 1 } });
    await instance.request({ url: "/api/orders" });
    await instance.request({ url: "orders", baseURL: "/api", method: "delete" });
    await instance.request({ url: "https://evil.example/x", method: "post", withCredentials: true });
    await instance.request({ url: "/x", baseURL: "https://evil.example", method: "put" });
    expect(sent.map((c) => c.headers["X-CSRF-Token"])).toEqual(["token-1", undefined, "token-1", undefined, undefined]);
    // Same origin: left to Axios (XHR sends same-origin cookies anyway); other origins: cookies off.
    expect(sent.map((c) => c.withCredentials)).toEqual([undefined, undefined, undefined, false, false]);
    expect(gw.state.sessionReads).toBe(1);
  });

  it("works with AxiosHeaders-style headers (set())", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const set = vi.fn();
    const { instance } = fakeAxios(() => ({ status: 200 }));
    attachAxios(instance, client);
    instance.interceptors.request.use((c: Config) => ({ ...c, headers: { set } as unknown as Record<string, string> }));
    await instance.request({ url: "/api/x", method: "patch" });
    expect(set).toHaveBeenCalledWith("X-CSRF-Token", "token-1");
  });

  it("retries once after a CSRF 403 with a fresh token", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios((c) =>
      c.headers["X-CSRF-Token"] === "token-2" ? { status: 201, data: { ok: true } } : { status: 403, data: csrfProblem },
    );
    attachAxios(instance, client);
    await client.session();
    gw.state.token = "token-2";
    const response = (await instance.request({ url: "/api/orders", method: "post", data: { a: 1 } })) as Reply;
    expect(response.status).toBe(201);
    expect(sent.map((c) => c.headers["X-CSRF-Token"])).toEqual(["token-1", "token-2"]);
    expect(sent[1]?.data).toEqual({ a: 1 });
  });

  it("gives up after one retry; parses a string problem body too", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios(() => ({ status: 403, data: JSON.stringify(csrfProblem) }));
    attachAxios(instance, client);
    await expect(instance.request({ url: "/api/orders", method: "post" })).rejects.toMatchObject({ response: { status: 403 } });
    expect(sent).toHaveLength(2);
  });

  it("does not retry a stream body, a non-CSRF 403, or a safe method", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    let reply: Reply = { status: 403, data: csrfProblem };
    const { instance, sent } = fakeAxios(() => reply);
    attachAxios(instance, client);
    const stream = new ReadableStream();
    await expect(instance.request({ url: "/api/a", method: "post", data: stream })).rejects.toBeTruthy();
    await expect(instance.request({ url: "/api/a", method: "get" })).rejects.toBeTruthy();
    reply = { status: 403, data: { type: "urn:portcullis:problem:forbidden" } };
    await expect(instance.request({ url: "/api/a", method: "post", data: "x" })).rejects.toBeTruthy();
    expect(sent).toHaveLength(3);
  });

  it("emits session-expired on a same-origin 401 and does not retry", async () => {
    const gw = fakeGateway();
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    const { instance, sent } = fakeAxios(() => ({ status: 401, data: { type: "urn:portcullis:problem:unauthenticated" } }));
    attachAxios(instance, client);
    await expect(instance.request({ url: "https://other.example/x" })).rejects.toBeTruthy();
    expect(expired).not.toHaveBeenCalled();
    await expect(instance.request({ url: "/api/x" })).rejects.toMatchObject({ response: { status: 401 } });
    expect(expired).toHaveBeenCalledTimes(1);
    expect(sent).toHaveLength(2);
  });

  it("ignores an upstream's own 401 (not the gateway's unauthenticated problem)", async () => {
    const gw = fakeGateway();
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    const replies = [{ status: 401, data: { error: "not yours" } }, { status: 401, data: "no" }, { status: 401 }];
    const { instance } = fakeAxios(() => replies.shift() ?? { status: 401 });
    attachAxios(instance, client);
    for (let i = 0; i < 3; i++) {
      await expect(instance.request({ url: "/api/x" })).rejects.toMatchObject({ response: { status: 401 } });
    }
    expect(expired).not.toHaveBeenCalled();
  });

  it("detaches, and refuses an object that is not a client", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios(() => ({ status: 200 }));
    const detach = attachAxios(instance, client);
    detach();
    await instance.request({ url: "/api/x", method: "post" });
    expect(sent[0]?.headers["X-CSRF-Token"]).toBeUndefined();
    expect(() => attachAxios(instance, { ...client })).toThrow(TypeError);
  });
});

/**
 * What Axios's fetch adapter (`adapter: "fetch"`, axios >= 1.7) hands to `fetch` for cookies and redirects, as
 * axios 1.21.1's lib/adapters/fetch.js computes it: `withCredentials` defaults to "same-origin" and a boolean
 * becomes "include"/"omit"; `fetchOptions` is spread in, minus the keys Axios owns (`credentials` among them, so
 * `withCredentials` alone decides); `maxRedirects: 0` forces "manual"; the Request default is "follow".
 */
function axiosFetchInit(config: Config): RequestInit {
  let withCredentials: unknown = config.withCredentials === undefined ? "same-origin" : config.withCredentials;
  if (typeof withCredentials !== "string") withCredentials = withCredentials ? "include" : "omit";
  const { body: _b, headers: _h, method: _m, signal: _s, duplex: _d, credentials: _c, ...options } = config.fetchOptions ?? {};
  const init: RequestInit = { redirect: "follow", ...options, credentials: withCredentials as RequestCredentials };
  if (config.maxRedirects === 0) init.redirect = "manual";
  return init;
}

describe("attachAxios with Axios's fetch adapter", () => {
  it("sends the session cookie to the same origin (credentials 'same-origin'), never to another", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios(() => ({ status: 200 }));
    attachAxios(instance, client);
    await instance.request({ url: "/api/orders" });
    await instance.request({ url: "/api/orders", method: "post", data: "x" });
    await instance.request({ url: "/api/orders", withCredentials: false });
    await instance.request({ url: "https://evil.example/x", withCredentials: true });
    await instance.request({ url: "https://evil.example/x", method: "post", fetchOptions: { credentials: "include" } });
    expect(sent.map((c) => axiosFetchInit(c).credentials)).toEqual(["same-origin", "same-origin", "same-origin", "omit", "omit"]);
    expect(sent.map((c) => c.fetchOptions?.credentials)).toEqual(["same-origin", "same-origin", "same-origin", "omit", "omit"]);
  });

  it("never follows a redirect with the token: fetchOptions.redirect 'error' (a caller's 'manual' kept)", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios((c) =>
      c.headers["X-CSRF-Token"] === "token-1" ? { status: 403, data: csrfProblem } : { status: 200 },
    );
    attachAxios(instance, client);
    await client.session();
    gw.state.token = "token-2";
    const callerOptions = { priority: "high", redirect: "follow" };
    await instance.request({ url: "/api/orders", method: "post", data: "x", fetchOptions: callerOptions });
    await instance.request({ url: "/api/orders", method: "delete", fetchOptions: { redirect: "manual" } });
    await instance.request({ url: "/api/orders", fetchOptions: { redirect: "follow" } });
    await instance.request({ url: "https://evil.example/x", method: "post" });
    expect(sent.map((c) => [c.headers["X-CSRF-Token"], axiosFetchInit(c).redirect])).toEqual([
      ["token-1", "error"],
      ["token-2", "error"], // the retry after the CSRF 403
      ["token-2", "manual"],
      [undefined, "follow"],
      [undefined, "follow"],
    ]);
    expect(sent[0]?.fetchOptions).toMatchObject({ priority: "high" });
    expect(callerOptions).toEqual({ priority: "high", redirect: "follow" }); // merged into a copy, not mutated
  });

  it("decides same origin against the document's base URL", async () => {
    vi.stubGlobal("document", { baseURI: "https://cdn.example/app/" });
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const { instance, sent } = fakeAxios(() => ({ status: 200 }));
    attachAxios(instance, client);
    await instance.request({ url: "api/orders", method: "post" });
    expect(sent[0]?.headers["X-CSRF-Token"]).toBeUndefined();
    expect(sent[0]?.withCredentials).toBe(false);
  });
});
