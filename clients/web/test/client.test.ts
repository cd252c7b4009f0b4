import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createClient, PortcullisError } from "../src/index.js";
import { fakeGateway, installLocation, json, ORIGIN, problem, type FakeLocation } from "./helpers.js";

let location: FakeLocation;
beforeEach(() => {
  location = installLocation();
});
afterEach(() => {
  vi.unstubAllGlobals();
});

describe("session()", () => {
  it("returns the session without the CSRF token", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const session = await client.session();
    expect(session).toEqual({ authenticated: true, user: { sub: "alice", name: "Alice" }, expiresAt: 1800000000 });
    expect(JSON.stringify(session)).not.toContain("token-1");
    expect(gw.calls[0]).toMatchObject({ url: `${ORIGIN}/bff/session`, method: "GET", credentials: "same-origin" });
  });

  it("returns null on 401 and throws PortcullisError on other failures", async () => {
    const gw = fakeGateway();
    gw.state.loggedIn = false;
    const client = createClient({ fetch: gw.fetch });
    expect(await client.session()).toBeNull();
    const broken = createClient({ fetch: async () => problem(503, "unavailable") });
    await expect(broken.session()).rejects.toBeInstanceOf(PortcullisError);
  });

  it("honours a custom basePath", async () => {
    const gw = fakeGateway();
    const client = createClient({ basePath: "/auth/", fetch: gw.fetch });
    await client.session();
    expect(gw.calls[0]?.url).toBe(`${ORIGIN}/auth/session`);
  });
});

describe("the CSRF token is never exposed", () => {
  it("is not a property, not in JSON, not on window, not in storage", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    await client.fetch("/api/orders", { method: "POST", body: "{}" });
    expect(Object.keys(client).sort()).toEqual(["fetch", "handshake", "login", "loginError", "logout", "on", "session"]);
    expect(JSON.stringify(client)).toBe("{}");
    for (const key of Reflect.ownKeys(client)) {
      const value = (client as unknown as Record<PropertyKey, unknown>)[key];
      expect(typeof value).toBe("function");
      expect(String(value)).not.toContain("token-1");
    }
    expect(Object.isFrozen(client)).toBe(true);
    // No global (string) variable holds it; the client never touches storage (no localStorage exists here at all).
    expect("localStorage" in globalThis).toBe(false);
    const leaking = Object.getOwnPropertyNames(globalThis).filter((name) => {
      try {
        const value: unknown = (globalThis as Record<string, unknown>)[name];
        return typeof value === "string" && value.includes("token-1");
      } catch {
        return false;
      }
    });
    expect(leaking).toEqual([]);
  });
});

describe("fetch(): X-CSRF-Token rules", () => {
  it.each(["POST", "PUT", "PATCH", "DELETE", "post", "PROPFIND"])("adds the header on %s to the same origin", async (method) => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("/api/orders", { method, body: "x" });
    const call = gw.calls.at(-1)!;
    expect(call.method).toBe(method.toUpperCase());
    expect(call.headers.get("X-CSRF-Token")).toBe("token-1");
    expect(call.credentials).toBe("same-origin");
  });

  it.each(["GET", "HEAD", "OPTIONS", undefined])("never adds it on %s (and does not read the session for it)", async (method) => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("/api/orders", method ? { method } : undefined);
    expect(gw.calls).toHaveLength(1);
    expect(gw.calls[0]?.headers.has("X-CSRF-Token")).toBe(false);
    expect(gw.calls[0]?.credentials).toBe("same-origin");
  });

  it.each([
    "https://evil.example/api/orders",
    "//evil.example/api/orders",
    "http://app.example/api/orders",
    "https://app.example:8443/api/orders",
    "https://api.app.example/orders",
  ])("never sends it to another origin: %s", async (url) => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    await client.fetch(url, { method: "POST", body: "x", credentials: "include" });
    const call = gw.calls.at(-1)!;
    expect(call.headers.has("X-CSRF-Token")).toBe(false);
    expect(call.credentials).toBe("same-origin");
  });

  it("treats an absolute URL of our own origin, a URL object and a Request as same-origin", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch(`${ORIGIN}/api/a`, { method: "POST" });
    await client.fetch(new URL("/api/b", ORIGIN), { method: "DELETE" });
    await client.fetch(new Request(`${ORIGIN}/api/c`, { method: "PUT", body: "x" }));
    const sent = gw.calls.filter((c) => c.url.includes("/api/"));
    expect(sent.map((c) => c.headers.get("X-CSRF-Token"))).toEqual(["token-1", "token-1", "token-1"]);
    expect(sent[2]?.method).toBe("PUT");
  });

  it("does not send a cross-origin Request's header either", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    await client.fetch(new Request("https://evil.example/x", { method: "POST", body: "x" }));
    expect(gw.calls.at(-1)?.headers.has("X-CSRF-Token")).toBe(false);
  });

  it("reads the token lazily, once, and keeps the caller's headers", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await Promise.all([
      client.fetch("/api/a", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }),
      client.fetch("/api/b", { method: "POST", body: "{}" }),
    ]);
    await client.fetch("/api/c", { method: "POST" });
    expect(gw.state.sessionReads).toBe(1);
    expect(gw.calls[0]?.url).toBe(`${ORIGIN}/bff/session`);
    const a = gw.calls.find((c) => c.url.endsWith("/api/a"))!;
    expect(a.headers.get("content-type")).toBe("application/json");
    expect(a.headers.get("x-csrf-token")).toBe("token-1");
  });

  it("without a session: answers the 401, emits session-expired and sends nothing upstream", async () => {
    const gw = fakeGateway();
    gw.state.loggedIn = false;
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    const response = await client.fetch("/api/orders", { method: "POST", body: "x" });
    expect(response.status).toBe(401);
    expect(expired).toHaveBeenCalledTimes(1);
    expect(gw.calls.some((c) => c.url.includes("/api/"))).toBe(false);
  });
});

describe("fetch(): CSRF 403 retry", () => {
  it("re-reads /bff/session once and retries once with the new token", async () => {
    const gw = fakeGateway({
      handler: (call) => (call.headers.get("x-csrf-token") === "token-2" ? json(201, { id: 7 }) : problem(403, "csrf")),
    });
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    gw.state.token = "token-2"; // e.g. a new session in another tab
    const response = await client.fetch("/api/orders", { method: "POST", body: JSON.stringify({ n: 1 }) });
    expect(response.status).toBe(201);
    const posts = gw.calls.filter((c) => c.url.endsWith("/api/orders"));
    expect(posts.map((c) => c.headers.get("x-csrf-token"))).toEqual(["token-1", "token-2"]);
    expect(posts[1]?.body).toBe(JSON.stringify({ n: 1 }));
    expect(gw.state.sessionReads).toBe(2);
  });

  it("gives up after one retry and returns the second 403", async () => {
    const gw = fakeGateway({ handler: () => problem(403, "csrf") });
    const client = createClient({ fetch: gw.fetch });
    const response = await client.fetch("/api/orders", { method: "POST", body: "x" });
    expect(response.status).toBe(403);
    expect(gw.calls.filter((c) => c.url.endsWith("/api/orders"))).toHaveLength(2);
    expect(gw.state.sessionReads).toBe(2);
  });

  it.each([
    ["string", () => "text"],
    ["URLSearchParams", () => new URLSearchParams({ a: "1" })],
    ["FormData", () => new FormData()],
    ["Blob", () => new Blob(["x"])],
    ["ArrayBuffer", () => new ArrayBuffer(4)],
    ["null", () => null],
  ])("retries a %s body", async (_name, body) => {
    const gw = fakeGateway({ handler: () => problem(403, "csrf") });
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("/api/x", { method: "POST", body: body() });
    expect(gw.calls.filter((c) => c.url.endsWith("/api/x"))).toHaveLength(2);
  });

  it("does not retry a ReadableStream body", async () => {
    const gw = fakeGateway({ handler: () => problem(403, "csrf") });
    const client = createClient({ fetch: gw.fetch });
    const body = new ReadableStream({ start: (c) => c.close() });
    const response = await client.fetch("/api/x", { method: "POST", body, duplex: "half" } as RequestInit);
    expect(response.status).toBe(403);
    expect(gw.calls.filter((c) => c.url.endsWith("/api/x"))).toHaveLength(1);
  });

  it("does not retry a 403 that is not a CSRF problem", async () => {
    const gw = fakeGateway({ handler: () => problem(403, "forbidden") });
    const client = createClient({ fetch: gw.fetch });
    const response = await client.fetch("/api/x", { method: "POST", body: "x" });
    expect(response.status).toBe(403);
    expect(gw.calls.filter((c) => c.url.endsWith("/api/x"))).toHaveLength(1);
    expect(await response.json()).toMatchObject({ type: "urn:portcullis:problem:forbidden" });
  });

  it("does not retry a cross-origin 403 that claims to be CSRF", async () => {
    const gw = fakeGateway({ handler: () => problem(403, "csrf") });
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("https://evil.example/x", { method: "POST", body: "x" });
    expect(gw.calls.map((c) => c.url)).toEqual(["https://evil.example/x"]);
  });
});

describe("fetch(): 401", () => {
  it("emits session-expired once and does not retry", async () => {
    const gw = fakeGateway({ handler: () => problem(401, "unauthenticated") });
    const viaOption = vi.fn();
    const viaOn = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: viaOption });
    const off = client.on("session-expired", viaOn);
    const response = await client.fetch("/api/orders");
    expect(response.status).toBe(401);
    expect(gw.calls.filter((c) => c.url.endsWith("/api/orders"))).toHaveLength(1);
    await client.fetch("/api/orders");
    expect(viaOption).toHaveBeenCalledTimes(1);
    expect(viaOn).toHaveBeenCalledTimes(1);
    off();
  });

  it("forgets the token, and emits again after a new session expires", async () => {
    let status = 401;
    const gw = fakeGateway({ handler: () => (status === 401 ? problem(401, "unauthenticated") : json(200, {})) });
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    await client.session();
    await client.fetch("/api/a", { method: "POST" });
    expect(expired).toHaveBeenCalledTimes(1);
    status = 200;
    await client.fetch("/api/a", { method: "POST" }); // re-reads the token: the session read resets the notice
    expect(gw.state.sessionReads).toBe(2);
    status = 401;
    await client.fetch("/api/a", { method: "POST" });
    expect(expired).toHaveBeenCalledTimes(2);
  });

  it("ignores an upstream's own 401: only the gateway's unauthenticated problem ends the session", async () => {
    const answers = [json(401, { error: "not your order" }), problem(401, "forbidden-resource"), new Response("no", { status: 401 })];
    const gw = fakeGateway({ handler: () => answers.shift() });
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    await client.session();
    for (let i = 0; i < 3; i++) {
      const response = await client.fetch("/api/orders/9");
      expect(response.status).toBe(401);
      await response.text(); // the caller can still read the body
    }
    expect(expired).not.toHaveBeenCalled();
    await expect(client.session()).resolves.not.toBeNull();
  });

  it("ignores a 401 from another origin", async () => {
    const gw = fakeGateway({ handler: () => problem(401, "unauthenticated") });
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    await client.fetch("https://other.example/x");
    expect(expired).not.toHaveBeenCalled();
  });
});

describe("login()", () => {
  it("navigates to /bff/login with the encoded current path by default", () => {
    const client = createClient({ fetch: fakeGateway().fetch });
    const url = client.login();
    expect(url).toBe("/bff/login?returnTo=%2Fnotes%3Ftab%3D1%23top");
    expect(location.assign).toHaveBeenCalledWith(url);
  });

  it("encodes an explicit returnTo and passes prompt=none", () => {
    const client = createClient({ basePath: "/auth", fetch: fakeGateway().fetch });
    const url = client.login("/a b?x=1&y=2#h", { prompt: "none" });
    const parsed = new URL(url, ORIGIN);
    expect(parsed.pathname).toBe("/auth/login");
    expect(parsed.searchParams.get("returnTo")).toBe("/a b?x=1&y=2#h");
    expect(parsed.searchParams.get("prompt")).toBe("none");
    expect([...parsed.searchParams.keys()]).toEqual(["returnTo", "prompt"]);
    expect(url).not.toContain("#");
    expect(location.assign).toHaveBeenCalledWith(url);
  });

  it("reads the error code a failed login left on the URL", () => {
    installLocation("/home?error=login_required");
    expect(createClient().loginError()).toBe("login_required");
    installLocation("/home");
    expect(createClient().loginError()).toBeNull();
  });
});

describe("handshake()", () => {
  it("posts JSON credentials without a CSRF token and keeps the token it gets", async () => {
    const calls: { url: string; init: RequestInit }[] = [];
    const fetch = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
      calls.push({ url: String(input), init });
      if (String(input) === "/bff/handshake") {
        return json(200, { authenticated: true, user: { sub: "bob" }, csrfToken: "hs-token", expiresAt: 5 });
      }
      return json(200, {});
    });
    const client = createClient({ fetch });
    const session = await client.handshake({ username: "bob", password: "pw" });
    expect(session).toEqual({ authenticated: true, user: { sub: "bob" }, expiresAt: 5 });
    expect(calls[0]?.init.method).toBe("POST");
    expect(JSON.parse(String(calls[0]?.init.body))).toEqual({ username: "bob", password: "pw" });
    expect(new Headers(calls[0]?.init.headers).get("content-type")).toBe("application/json");
    expect(new Headers(calls[0]?.init.headers).has("x-csrf-token")).toBe(false);
    await client.fetch("/api/x", { method: "POST" });
    expect(calls).toHaveLength(2); // no /bff/session read: the handshake gave the token
    expect(new Headers(calls[1]?.init.headers).get("x-csrf-token")).toBe("hs-token");
  });

  it("throws a PortcullisError with status 401 for bad credentials", async () => {
    const client = createClient({ fetch: async () => problem(401, "login-failed") });
    const error = await client.handshake({ username: "x", password: "y" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PortcullisError);
    expect(error).toMatchObject({ status: 401, problem: { type: "urn:portcullis:problem:login-failed" } });
  });
});

describe("logout()", () => {
  it("posts with the token, forgets it, emits logout and navigates to logoutUrl", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const onLogout = vi.fn();
    client.on("logout", onLogout);
    await client.session();
    const result = await client.logout();
    expect(result).toEqual({ logoutUrl: "https://idp.example/end?client_id=app" });
    const post = gw.calls.find((c) => c.url.endsWith("/bff/logout"))!;
    expect(post.method).toBe("POST");
    expect(post.headers.get("x-csrf-token")).toBe("token-1");
    expect(location.assign).toHaveBeenCalledWith("https://idp.example/end?client_id=app");
    expect(onLogout).toHaveBeenCalledTimes(1);
    // The token is gone: the next unsafe request reads the session again (now 401).
    gw.state.loggedIn = false;
    const reads = gw.state.sessionReads;
    const response = await client.fetch("/api/x", { method: "POST" });
    expect(gw.state.sessionReads).toBe(reads + 1);
    expect(response.status).toBe(401);
  });

  it("does not navigate with navigate:false or a null logoutUrl", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    expect(await client.logout({ navigate: false })).toEqual({ logoutUrl: "https://idp.example/end?client_id=app" });
    const gw2 = fakeGateway();
    gw2.state.logoutUrl = null;
    expect(await createClient({ fetch: gw2.fetch }).logout()).toEqual({ logoutUrl: null });
    expect(location.assign).not.toHaveBeenCalled();
  });

  it("reads the token first when it has none, and treats 'no session' as logged out", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.logout({ navigate: false });
    expect(gw.calls.map((c) => c.url.replace(ORIGIN, ""))).toEqual(["/bff/session", "/bff/logout"]);
    const expired = vi.fn();
    const loggedOut = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    expect(await loggedOut.logout()).toEqual({ logoutUrl: null });
    expect(expired).not.toHaveBeenCalled();
  });

  it("throws on an unexpected failure", async () => {
    const gw = fakeGateway();
    const client = createClient({
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) =>
        String(input).endsWith("/logout") ? problem(500, "internal") : gw.fetch(input, init)) as typeof fetch,
    });
    await expect(client.logout()).rejects.toMatchObject({ status: 500 });
  });
});

describe("fetch(): a request that carries the token never follows a redirect", () => {
  it("sends every unsafe same-origin request, its retry too, with redirect: 'error'", async () => {
    const gw = fakeGateway({
      handler: (call) => (call.headers.get("x-csrf-token") === "token-2" ? json(201, {}) : problem(403, "csrf")),
    });
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    gw.state.token = "token-2";
    await client.fetch("/api/orders", { method: "POST", body: "x", redirect: "follow" });
    const posts = gw.calls.filter((c) => c.url.endsWith("/api/orders"));
    expect(posts.map((c) => c.redirect)).toEqual(["error", "error"]);
  });

  it("overrides a Request's own 'follow', keeps a caller's 'manual'", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch(new Request(`${ORIGIN}/api/a`, { method: "PUT", body: "x" }));
    await client.fetch(new Request(`${ORIGIN}/api/b`, { method: "PUT", body: "x", redirect: "manual" }));
    await client.fetch("/api/c", { method: "DELETE", redirect: "manual" });
    const sent = gw.calls.filter((c) => c.url.includes("/api/"));
    expect(sent.map((c) => [c.headers.get("x-csrf-token"), c.redirect])).toEqual([
      ["token-1", "error"],
      ["token-1", "manual"],
      ["token-1", "manual"],
    ]);
  });

  it("leaves safe methods and other origins as the caller asked", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("/api/a");
    await client.fetch("/api/b", { redirect: "follow" });
    await client.fetch("https://other.example/c", { method: "POST", body: "x", redirect: "follow" });
    expect(gw.calls.map((c) => c.redirect)).toEqual([undefined, "follow", "follow"]);
  });

  it("logout() does not follow one either", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.logout({ navigate: false });
    expect(gw.calls.find((c) => c.url.endsWith("/bff/logout"))?.redirect).toBe("error");
  });

  it("with the platform's fetch: a 307 to another origin is a network error, and that origin sees nothing", async () => {
    const elsewhere: Record<string, unknown>[] = [];
    const other = await listen((request, response) => {
      elsewhere.push(request.headers);
      response.end("ok");
    });
    const app = await listen((request, response) => {
      if (request.url === "/bff/session") {
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify({ authenticated: true, user: { sub: "alice" }, csrfToken: "token-1", expiresAt: 1 }));
        return;
      }
      response.statusCode = 307;
      response.setHeader("location", `${other.origin}/collect`);
      response.end();
    });
    try {
      installLocation("/", app.origin);
      // Node's fetch wants absolute URLs: resolve against the page, as a browser does.
      const client = createClient({ fetch: (input, init) => fetch(new URL(String(input), app.origin), init) });
      await expect(client.fetch("/api/orders", { method: "POST", body: "x" })).rejects.toThrow(TypeError);
      expect(elsewhere).toEqual([]);
      // A GET (no token) is the caller's business: it follows.
      const followed = await client.fetch("/api/orders");
      expect(await followed.text()).toBe("ok");
      expect(elsewhere.map((h) => h["x-csrf-token"])).toEqual([undefined]);
    } finally {
      app.close();
      other.close();
    }
  });
});

/** A throwaway HTTP server on a loopback port (its own origin). */
async function listen(handler: (request: IncomingMessage, response: ServerResponse) => void) {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  return {
    origin: `http://127.0.0.1:${address.port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe("concurrent session reads share one response", () => {
  it("two concurrent session() calls both resolve (one request)", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const [a, b] = await Promise.all([client.session(), client.session()]);
    expect(a).toEqual({ authenticated: true, user: { sub: "alice", name: "Alice" }, expiresAt: 1800000000 });
    expect(b).toEqual(a);
    expect(gw.state.sessionReads).toBe(1);
  });

  it("session() alongside unsafe fetches that wait for the token", async () => {
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    const [session, response] = await Promise.all([client.session(), client.fetch("/api/a", { method: "POST" }), client.session()]);
    expect(session?.user).toMatchObject({ sub: "alice" });
    expect(response.status).toBe(200);
    expect(gw.state.sessionReads).toBe(1);
  });

  it("without a session, every waiting caller gets its own readable 401", async () => {
    const gw = fakeGateway();
    gw.state.loggedIn = false;
    const client = createClient({ fetch: gw.fetch });
    const [r1, r2, session] = await Promise.all([
      client.fetch("/api/a", { method: "POST" }),
      client.fetch("/api/b", { method: "POST" }),
      client.session(),
    ]);
    expect(session).toBeNull();
    expect(r1).not.toBe(r2);
    expect(await r1.json()).toMatchObject({ type: "urn:portcullis:problem:unauthenticated" });
    expect(await r2.json()).toMatchObject({ type: "urn:portcullis:problem:unauthenticated" });
    expect(gw.state.sessionReads).toBe(1);
  });

  it("concurrent session() calls on a gateway failure both throw with the problem", async () => {
    const client = createClient({ fetch: async () => problem(503, "unavailable") });
    const results = await Promise.allSettled([client.session(), client.session()]);
    for (const result of results) {
      expect(result.status).toBe("rejected");
      expect((result as PromiseRejectedResult).reason).toMatchObject({ status: 503, problem: { type: "urn:portcullis:problem:unavailable" } });
    }
  });

  it("a 401 on the first session() emits nothing (there was no session to expire)", async () => {
    const gw = fakeGateway();
    gw.state.loggedIn = false;
    const expired = vi.fn();
    const client = createClient({ fetch: gw.fetch, onSessionExpired: expired });
    expect(await client.session()).toBeNull();
    expect(expired).not.toHaveBeenCalled();
  });
});

describe("same origin is decided against the document's base URL (as fetch resolves)", () => {
  it("a relative URL under a <base href> of another origin never gets the token", async () => {
    vi.stubGlobal("document", { baseURI: "https://cdn.example/app/" });
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    await client.fetch("api/orders", { method: "POST", body: "x" });
    expect(gw.calls.at(-1)?.headers.has("X-CSRF-Token")).toBe(false);
  });

  it("a <base href> on our own origin still gets it; a relative URL resolves against the base, not the page", async () => {
    vi.stubGlobal("document", { baseURI: `${ORIGIN}/app/` });
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.fetch("api/orders", { method: "POST", body: "x" });
    expect(gw.calls.at(-1)?.headers.get("X-CSRF-Token")).toBe("token-1");
  });

  it("a page on another origin than its base: the page's origin still decides what is ours", async () => {
    // location is https://app.example; the base is https://app.example.evil/ : not ours.
    vi.stubGlobal("document", { baseURI: "https://app.example.evil/" });
    const gw = fakeGateway();
    const client = createClient({ fetch: gw.fetch });
    await client.session();
    await client.fetch("/api/orders", { method: "POST", body: "x" });
    expect(gw.calls.at(-1)?.headers.has("X-CSRF-Token")).toBe(false);
  });
});
