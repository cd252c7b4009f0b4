//! Attack suite, proxy: path normalisation, absolute-form and `Host` tricks, request smuggling,
//! hop-by-hop and client-supplied identity headers, oversized requests. Every case is exact bytes
//! on a raw socket from a logged-in browser (so an accepted request really is proxied), one table
//! row each; a second recording server that no route names must never see a request, and the
//! route's upstream never sees a browser cookie or a smuggled request.

mod common;

use common::{
    COOKIE, Stack,
    raw_http::{exchange, port_of, sentinel, statuses},
};
use testkit::{browser::Browser, upstream::RecordingUpstream};

struct Client {
    port: u16,
    host: String,
    cookie: String,
    csrf: String,
}

impl Client {
    async fn new(stack: &Stack) -> Client {
        let browser = Browser::new();
        let ticket = stack.login(&browser).await;
        let csrf = stack.csrf(&browser).await;
        Client {
            port: port_of(&stack.base),
            host: stack.base.trim_start_matches("http://").to_owned(),
            cookie: format!("{COOKIE}={ticket}"),
            csrf,
        }
    }

    /// Sends `head` (request line and headers, each line ending in CRLF, no blank line), the
    /// logged-in cookie, then the blank line, `body` and a closing sentinel request.
    async fn send(&self, head: &str, body: &str) -> Vec<u8> {
        let payload = format!(
            "{head}Cookie: {}\r\n\r\n{body}{}",
            self.cookie,
            sentinel(&self.host)
        );
        exchange(self.port, payload.as_bytes()).await
    }
}

fn first_status(name: &str, raw: &[u8]) -> u16 {
    *statuses(raw)
        .first()
        .unwrap_or_else(|| panic!("{name}: no response: {}", String::from_utf8_lossy(raw)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_target_tricks_never_escape_the_route() {
    let stack = Stack::start().await;
    let evil = RecordingUpstream::start().await;
    let c = Client::new(&stack).await;
    let e = evil.addr().to_string();
    let h = c.host.clone();
    // (name, request line + headers, expected status, path the route's upstream must see)
    let cases: Vec<(&str, String, u16, Option<String>)> = vec![
        (
            "dot-dot out of the prefix",
            format!("GET /api/orders/../../bff/session HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "dot-dot to the root",
            format!("GET /api/../../etc/passwd HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "single dot segment",
            format!("GET /api/orders/./1 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "trailing dot-dot",
            format!("GET /api/orders/.. HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2e%2e",
            format!("GET /api/orders/%2e%2e/x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2E%2E upper case",
            format!("GET /api/orders/%2E%2E/x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            ".%2e half encoded",
            format!("GET /api/orders/.%2e/x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%252e double encoded",
            format!("GET /api/orders/%252e%252e/x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2f encoded slash",
            format!("GET /api/orders%2f..%2fx HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2F upper case slash",
            format!("GET /api/orders/%2Fadmin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%5c encoded backslash",
            format!("GET /api/orders/..%5cx HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%255c double encoded backslash",
            format!("GET /api/orders/..%255cx HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "raw backslash",
            format!("GET /api/orders/..\\x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%00 NUL",
            format!("GET /api/orders/1%00.json HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2500 double encoded NUL",
            format!("GET /api/orders/1%2500 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "raw NUL in the target",
            format!("GET /api/orders/1\0x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "raw CR in the target",
            format!("GET /api/orders/1\rX-Injected: 1 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "raw LF in the target",
            format!("GET /api/orders/1\nX-Injected: 1 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "..; path parameter (Tomcat)",
            format!("GET /api/orders/..;/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            ".; path parameter",
            format!("GET /api/orders/.;/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "..;param=value",
            format!("GET /api/orders/..;a=b/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "%2e%2e; path parameter",
            format!("GET /api/orders/%2e%2e;/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "relative target",
            format!("GET api/orders/1 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        // Accepted, and proxied exactly as given to the route's own upstream.
        (
            "; parameter on a plain segment",
            format!("GET /api/orders/1;v=2 HTTP/1.1\r\nHost: {h}\r\n"),
            200,
            Some("/orders/1;v=2".into()),
        ),
        (
            "encoded CRLF stays encoded",
            format!("GET /api/orders/%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: {h}\r\n"),
            200,
            Some("/orders/%0d%0aX-Injected:%201".into()),
        ),
        // An empty segment: `//host/x` is a network-path reference to many URL parsers.
        (
            "double slash after the prefix",
            format!("GET /api//{e}/x HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "double slash inside the prefix",
            format!("GET /api/orders//1 HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "HTTP/1.1 without Host",
            "GET /api/orders/1 HTTP/1.1\r\n".to_owned(),
            400,
            None,
        ),
        (
            "HTTP/1.0 without Host (allowed)",
            "GET /api/orders/1 HTTP/1.0\r\n".to_owned(),
            200,
            Some("/orders/1".into()),
        ),
        (
            "TRACE, which would reflect the bearer token",
            format!("TRACE /api/orders/1 HTTP/1.1\r\nHost: {h}\r\n"),
            501,
            None,
        ),
        (
            "overlong UTF-8 dots",
            format!("GET /api/orders/%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "IIS %u dots",
            format!("GET /api/orders/%u002e%u002e/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "dots and a trailing space",
            format!("GET /api/orders/..%20/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        (
            "fullwidth dots (NFKC ..)",
            format!("GET /api/orders/%ef%bc%8e%ef%bc%8e/admin HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
        // Absolute-form and Host: the authority never picks the upstream.
        (
            "absolute-form to another host",
            format!("GET http://{e}/api/orders/1 HTTP/1.1\r\nHost: {e}\r\n"),
            200,
            Some("/orders/1".into()),
        ),
        (
            "absolute-form https",
            format!("GET https://{e}/api/orders/2 HTTP/1.1\r\nHost: {h}\r\n"),
            200,
            Some("/orders/2".into()),
        ),
        (
            "Host names another server",
            format!("GET /api/orders/3 HTTP/1.1\r\nHost: {e}\r\n"),
            200,
            Some("/orders/3".into()),
        ),
        (
            "Host with userinfo",
            format!("GET /api/orders/4 HTTP/1.1\r\nHost: user@{e}\r\n"),
            400,
            None,
        ),
        (
            "Host with a space",
            "GET /api/orders/4 HTTP/1.1\r\nHost: a b\r\n".to_owned(),
            400,
            None,
        ),
        (
            "duplicated Host",
            format!("GET /api/orders/5 HTTP/1.1\r\nHost: {h}\r\nHost: {e}\r\n"),
            400,
            None,
        ),
        (
            "CONNECT to another host",
            format!("CONNECT {e} HTTP/1.1\r\nHost: {e}\r\n"),
            501,
            None,
        ),
        (
            "asterisk-form OPTIONS",
            format!("OPTIONS * HTTP/1.1\r\nHost: {h}\r\n"),
            400,
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (name, head, expected, upstream_path) in cases {
        stack.upstream.clear();
        let raw = c.send(&head, "").await;
        let got = statuses(&raw);
        let seen = stack.upstream.requests();
        let upstream_ok = match &upstream_path {
            // Proxied exactly as given, to the route's own upstream, with the public host.
            Some(p) => {
                seen.len() == 1
                    && &seen[0].path_and_query == p
                    && !seen[0].has_header("x-injected")
                    && seen[0].header("x-forwarded-host") == Some(c.host.as_str())
            }
            None => seen.is_empty(),
        };
        if got.first() != Some(&expected) || !upstream_ok || evil.count() != 0 {
            failures.push(format!(
                "{name}: statuses {got:?} (want {expected}), upstream saw {:?}, unnamed server saw {}",
                seen.iter().map(|r| r.path_and_query.clone()).collect::<Vec<_>>(),
                evil.count()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_refused_or_framed_unambiguously() {
    let stack = Stack::start().await;
    let c = Client::new(&stack).await;
    let h = c.host.clone();
    let t = c.csrf.clone();
    let smuggled = format!("GET /api/smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let post = |framing: &str| {
        format!("POST /api/orders HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\n{framing}")
    };
    let chunked_then_smuggled = format!("0\r\n\r\n{smuggled}");
    let cl_of = |s: &str| s.len();
    // (name, head, body, expected status of the first response). After a 400 the connection is
    // closed, so the closing sentinel is never answered either.
    let cases: Vec<(&str, String, String, u16)> = vec![
        // RFC 9112 6.1: framed by Transfer-Encoding alone (hyper drops the Content-Length), and the
        // connection closed after the answer: the smuggled request and the sentinel are never read.
        (
            "CL and TE together",
            post(&format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_of(&chunked_then_smuggled)
            )),
            chunked_then_smuggled.clone(),
            200,
        ),
        (
            "TE then CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"),
            chunked_then_smuggled.clone(),
            200,
        ),
        (
            "two different Content-Length",
            post("Content-Length: 4\r\nContent-Length: 60\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "Content-Length list",
            post("Content-Length: 4, 60\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "Content-Length with a plus sign",
            post("Content-Length: +4\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "negative Content-Length",
            post("Content-Length: -1\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "hex Content-Length",
            post("Content-Length: 0x4\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "Content-Length with junk",
            post("Content-Length: 4x\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "huge Content-Length",
            post("Content-Length: 99999999999999999999999\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "TE xchunked",
            post("Transfer-Encoding: xchunked\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
        (
            "TE chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
        (
            "TE identity",
            post("Transfer-Encoding: identity\r\n"),
            format!("abcd{smuggled}"),
            400,
        ),
        (
            "TE with a space before the colon",
            post("Transfer-Encoding : chunked\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
        (
            "TE by obsolete line folding",
            post("Transfer-Encoding:\r\n chunked\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
        // A coding before `chunked` that the gateway does not implement (RFC 9112 §6.1: 501);
        // forwarded, it would reach the upstream as a plain body.
        (
            "TE gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n"),
            chunked_then_smuggled.clone(),
            501,
        ),
        (
            "TE identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n"),
            chunked_then_smuggled.clone(),
            501,
        ),
        (
            "TE twice, second unknown",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
        // Broken chunk framing fails the body while it streams to the upstream: 400 (the
        // client's fault, not a bad gateway), and the upstream never completes a request.
        (
            "chunk size 0x prefix",
            post("Transfer-Encoding: chunked\r\n"),
            format!("0x4\r\nabcd\r\n0\r\n\r\n{smuggled}"),
            400,
        ),
        (
            "chunk size overflow",
            post("Transfer-Encoding: chunked\r\n"),
            format!("fffffffffffffffff1\r\nabcd\r\n0\r\n\r\n{smuggled}"),
            400,
        ),
        (
            "negative chunk size",
            post("Transfer-Encoding: chunked\r\n"),
            format!("-4\r\nabcd\r\n0\r\n\r\n{smuggled}"),
            400,
        ),
        (
            "chunk without CRLF after data",
            post("Transfer-Encoding: chunked\r\n"),
            format!("4\r\nabcdXX0\r\n\r\n{smuggled}"),
            400,
        ),
        // RFC 9112 2.2 lets a recipient accept a bare LF (hyper does): the text after the body is
        // then this connection's next request, without credentials (401), never proxied.
        (
            "bare LF line ending in headers",
            format!(
                "POST /api/orders HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\nContent-Length: 4\r\n"
            ),
            format!("abcd{smuggled}"),
            200,
        ),
        (
            "HTTP/1.0 with TE",
            format!(
                "POST /api/orders HTTP/1.0\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\nTransfer-Encoding: chunked\r\n"
            ),
            chunked_then_smuggled.clone(),
            400,
        ),
        // No browser sends content with GET; an upstream that ignores it would take it for the
        // next request on its connection (CL.0).
        (
            "GET with a body and smuggled request",
            format!(
                "GET /api/orders HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\n",
                smuggled.len()
            ),
            smuggled.clone(),
            400,
        ),
        (
            "HEAD with a chunked body",
            format!("HEAD /api/orders HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n"),
            chunked_then_smuggled.clone(),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, head, body, expected) in cases {
        stack.upstream.clear();
        let raw = c.send(&head, &body).await;
        let text = String::from_utf8_lossy(&raw);
        let got = statuses(&raw);
        let upstream = stack.upstream.requests();
        let smuggled_through =
            text.contains("smuggled") || upstream.iter().any(|r| r.path().contains("smuggled"));
        let body_forwarded = upstream.iter().any(|r| r.body_text().contains("smuggled"));
        let must_close = expected == 400
            || expected == 501
            || name.contains("CL and TE")
            || name.contains("TE then CL");
        let closed_after_refusal = !must_close || got.len() == 1;
        let ok = got.first() == Some(&expected)
            && closed_after_refusal
            && !smuggled_through
            && (expected == 200 || upstream.is_empty())
            && (expected == 200 || !body_forwarded)
            && upstream.iter().all(|r| !r.has_header("cookie"));
        if !ok {
            failures.push(format!(
                "{name}: statuses {got:?} (want {expected} first), smuggled: {smuggled_through}, upstream saw {}",
                upstream.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_forwarding_and_hop_by_hop_headers_do_not_cross() {
    let stack = Stack::start().await;
    let c = Client::new(&stack).await;
    let h = c.host.clone();
    // (name, extra header lines): every value carries "spoofed"; none may reach the upstream.
    let cases: Vec<(&str, &str)> = vec![
        ("X-Forwarded-For", "X-Forwarded-For: 6.6.6.6-spoofed\r\n"),
        ("X-Forwarded-Host", "X-Forwarded-Host: spoofed.example\r\n"),
        ("X-Forwarded-Proto", "X-Forwarded-Proto: spoofed\r\n"),
        ("X-Forwarded-Port", "X-Forwarded-Port: 1-spoofed\r\n"),
        ("X-Forwarded-Prefix", "X-Forwarded-Prefix: /spoofed\r\n"),
        ("X-Forwarded-Server", "X-Forwarded-Server: spoofed\r\n"),
        ("X-Forwarded-User", "X-Forwarded-User: spoofed\r\n"),
        ("X-Forwarded-Email", "X-Forwarded-Email: spoofed@evil\r\n"),
        ("X-Forwarded", "X-Forwarded: for=spoofed\r\n"),
        ("Forwarded", "Forwarded: for=6.6.6.6;host=spoofed\r\n"),
        ("X-Real-IP", "X-Real-IP: spoofed\r\n"),
        ("X-Forwarded_For underscore", "X-Forwarded_For: spoofed\r\n"),
        (
            "X_Forwarded_For all underscores",
            "X_Forwarded_For: spoofed\r\n",
        ),
        (
            "X-Forwarded_Host underscore",
            "X-Forwarded_Host: spoofed\r\n",
        ),
        ("X-Real_IP underscore", "X-Real_IP: spoofed\r\n"),
        ("X-Client-IP", "X-Client-IP: spoofed\r\n"),
        ("True-Client-IP", "True-Client-IP: spoofed\r\n"),
        ("CF-Connecting-IP", "CF-Connecting-IP: spoofed\r\n"),
        ("X-Original-URL", "X-Original-URL: /spoofed\r\n"),
        ("X-Rewrite-URL", "X-Rewrite-URL: /spoofed\r\n"),
        ("X-User", "X-User: spoofed\r\n"),
        ("X_User underscore", "X_User: spoofed\r\n"),
        ("X-Remote-User", "X-Remote-User: spoofed\r\n"),
        ("Remote-User", "Remote-User: spoofed\r\n"),
        ("X-Auth-Request-User", "X-Auth-Request-User: spoofed\r\n"),
        ("X-Auth-Request-Email", "X-Auth-Request-Email: spoofed\r\n"),
        ("X-Email", "X-Email: spoofed\r\n"),
        ("X-Access-Token", "X-Access-Token: spoofed\r\n"),
        ("X-Id-Token", "X-Id-Token: spoofed\r\n"),
        (
            "Authorization Bearer from the browser",
            "Authorization: Bearer spoofed\r\n",
        ),
        (
            "Authorization Basic from the browser",
            "Authorization: Basic spoofed\r\n",
        ),
        (
            "Authorization twice",
            "Authorization: Bearer spoofed\r\nAuthorization: Bearer spoofed2\r\n",
        ),
        (
            "Proxy-Authorization",
            "Proxy-Authorization: Basic spoofed\r\n",
        ),
        ("X-CSRF-Token leaks no token", "X-CSRF-Token: spoofed\r\n"),
        ("X_CSRF_Token underscore", "X_CSRF_Token: spoofed\r\n"),
        ("a second Cookie header", "Cookie: other=spoofed\r\n"),
        (
            "Connection names Authorization",
            "Connection: Authorization\r\n",
        ),
        (
            "Connection names X-Forwarded-For",
            "Connection: X-Forwarded-For, X-Forwarded-Host\r\n",
        ),
        (
            "Connection names a custom header",
            "Connection: X-Secret\r\nX-Secret: spoofed\r\n",
        ),
        ("Keep-Alive", "Keep-Alive: timeout=5, spoofed=1\r\n"),
        ("TE trailers", "TE: trailers, spoofed\r\n"),
        ("Trailer", "Trailer: X-Spoofed\r\n"),
        (
            "Upgrade h2c",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: spoofed\r\n",
        ),
        (
            "Upgrade websocket on an API route",
            "Connection: Upgrade\r\nUpgrade: websocket-spoofed\r\n",
        ),
        ("Proxy-Connection", "Proxy-Connection: spoofed\r\n"),
    ];
    for (name, extra) in cases {
        stack.upstream.clear();
        let raw = c
            .send(
                &format!("GET /api/orders/1 HTTP/1.1\r\nHost: {h}\r\n{extra}"),
                "",
            )
            .await;
        let status = first_status(name, &raw);
        // An upgrade on a plain API route is refused outright (no h2c or WebSocket tunnel).
        if extra.contains("Upgrade:") {
            assert_eq!(status, 400, "{name}");
            assert_eq!(stack.upstream.count(), 0, "{name}");
            continue;
        }
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&raw));
        let got = stack.upstream.requests();
        assert_eq!(got.len(), 1, "{name}");
        let r = &got[0];
        for (k, v) in &r.headers {
            assert!(
                !v.contains("spoofed") && !k.contains("spoofed") && !k.contains("secret"),
                "{name}: upstream got {k}: {v}"
            );
        }
        assert!(!r.has_header("cookie"), "{name}: a browser cookie crossed");
        assert!(
            !r.has_header("upgrade") && !r.has_header("http2-settings"),
            "{name}"
        );
        let auth = r.header_all("authorization");
        assert_eq!(auth.len(), 1, "{name}: {auth:?}");
        assert!(auth[0].starts_with("Bearer "), "{name}");
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"), "{name}");
        assert_eq!(r.header("x-forwarded-host"), Some(h.as_str()), "{name}");
        assert_eq!(r.header("x-forwarded-proto"), Some("http"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_bounded_and_never_proxied() {
    let stack = Stack::start().await;
    let c = Client::new(&stack).await;
    let h = c.host.clone();
    let t = c.csrf.clone();
    let big_body = "x".repeat(64 * 1024 + 1);
    // (name, head, body, accepted statuses)
    let cases: Vec<(&str, String, String, &[u16])> = vec![
        (
            "one 100 KiB header",
            format!(
                "GET /api/orders HTTP/1.1\r\nHost: {h}\r\nX-Big: {}\r\n",
                "a".repeat(100 * 1024)
            ),
            String::new(),
            &[431, 400],
        ),
        (
            "2000 small headers",
            format!(
                "GET /api/orders HTTP/1.1\r\nHost: {h}\r\n{}",
                (0..2000)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            String::new(),
            &[431, 400],
        ),
        (
            "100 KiB URI",
            format!(
                "GET /api/orders/{} HTTP/1.1\r\nHost: {h}\r\n",
                "a".repeat(100 * 1024)
            ),
            String::new(),
            &[414, 431, 400],
        ),
        (
            "100 KiB query",
            format!(
                "GET /api/orders?q={} HTTP/1.1\r\nHost: {h}\r\n",
                "a".repeat(100 * 1024)
            ),
            String::new(),
            &[414, 431, 400],
        ),
        (
            "body over the limit by one byte",
            format!(
                "POST /api/orders/echo-body HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\nContent-Length: {}\r\n",
                big_body.len()
            ),
            big_body.clone(),
            &[413],
        ),
        (
            "chunked body over the limit",
            format!(
                "POST /api/orders/echo-body HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\nTransfer-Encoding: chunked\r\n"
            ),
            format!("{:x}\r\n{big_body}\r\n0\r\n\r\n", big_body.len()),
            &[413],
        ),
        (
            "declared huge body",
            format!(
                "POST /api/orders/echo-body HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\nContent-Length: 10737418240\r\n"
            ),
            "abc".into(),
            &[413],
        ),
    ];
    for (name, head, body, accepted) in cases {
        stack.upstream.clear();
        let raw = c.send(&head, &body).await;
        let status = first_status(name, &raw);
        assert!(
            accepted.contains(&status),
            "{name}: {status} {}",
            String::from_utf8_lossy(&raw[..raw.len().min(400)])
        );
        assert_eq!(stack.upstream.count(), 0, "{name}: reached the upstream");
    }
    // Control: the same route with a body at the limit is proxied.
    let ok_body = "x".repeat(64 * 1024);
    let raw = c
        .send(
            &format!(
                "POST /api/orders/echo-body HTTP/1.1\r\nHost: {h}\r\nX-CSRF-Token: {t}\r\nContent-Length: {}\r\n",
                ok_body.len()
            ),
            &ok_body,
        )
        .await;
    assert_eq!(first_status("control", &raw), 200);
    assert_eq!(stack.upstream.count(), 1);
    common::leak::assert_logs_clean(&stack.idp).await;
}

/// An upstream that answers each request with fixed, broken bytes chosen by the request's path,
/// then closes the connection.
async fn broken_upstream(answers: &'static [(&'static str, &'static str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("");
                if let Some((_, answer)) = answers.iter().find(|(p, _)| path.ends_with(p)) {
                    let _ = s.write_all(answer.as_bytes()).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

/// What an upstream answers is framed once more for the browser; an answer the upstream should
/// never have sent is refused rather than relayed half-understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_answers_are_reframed_or_refused() {
    let upstream = broken_upstream(&[
        // Both framings (RFC 9112 §6.3): read as chunked, so the Content-Length is false.
        (
            "/both-lengths",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // A 101 to a request that asked for no upgrade (RFC 9110 §15.2.2).
        (
            "/switch",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
        ),
    ])
    .await;
    let stack = Stack::start_with(common::Options {
        extra_toml: format!(
            "\n[[routes]]\nprefix = \"/broken\"\nupstream = \"{upstream}\"\ntimeout = \"2s\"\n"
        ),
        ..common::Options::default()
    })
    .await;
    let browser = Browser::new();
    stack.login(&browser).await;
    let r = browser
        .get(&stack.url("/broken/both-lengths"))
        .await
        .expect("both lengths");
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.text(), "hello", "the whole chunked body");
    assert_ne!(
        r.header("content-length"),
        Some("2"),
        "the false length is gone"
    );
    let r = browser
        .get(&stack.url("/broken/switch"))
        .await
        .expect("101");
    assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}
