//! Attack suite, CSRF: every route class (API routes, a route whose upstream is down, `/bff/logout`,
//! other `/bff/*` paths) × every way of presenting no token, the wrong token or the right token
//! from the wrong place or origin. One named row per (route, payload); the recording upstream
//! sees zero requests for all of them, and the session survives them all.

mod common;

use common::{
    COOKIE, Options, Stack,
    raw_http::{exchange, port_of, sentinel, statuses},
};
use http::Method;
use testkit::{browser::Browser, upstream::RecordingUpstream};

/// The default stack plus an aggregate (`GET /agg/home` composed from `/api/orders/1`) and a
/// WebSocket route `/ws` on its own recording upstream.
async fn stack_with_aggregate_and_websocket() -> (Stack, RecordingUpstream) {
    let ws = RecordingUpstream::start().await;
    let stack = Stack::start_with(Options {
        extra_toml: format!(
            r#"
[[routes]]
prefix = "/ws"
upstream = "{}"
timeout = "2s"
websocket = true

[[aggregates]]
path = "/agg/home"

[[aggregates.parts]]
name = "orders"
path = "/api/orders/1"
"#,
            ws.url()
        ),
        ..Options::default()
    })
    .await;
    (stack, ws)
}

/// A request shape applied to every route class.
struct Payload {
    name: &'static str,
    /// `None`: the route's own unsafe method.
    method: Option<Method>,
    /// Appended to the route's path.
    query: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    expected: u16,
}

fn p(name: &'static str, headers: Vec<(&'static str, String)>) -> Payload {
    Payload {
        name,
        method: None,
        query: String::new(),
        headers,
        body: String::new(),
        expected: 403,
    }
}

impl Payload {
    fn method(self, m: &[u8]) -> Self {
        Payload {
            method: Some(Method::from_bytes(m).expect("method")),
            ..self
        }
    }
    fn query(self, q: String) -> Self {
        Payload { query: q, ..self }
    }
    fn body(self, b: String) -> Self {
        Payload { body: b, ..self }
    }
    fn expect(self, expected: u16) -> Self {
        Payload { expected, ..self }
    }
}

fn payloads(csrf: &str, foreign: &str, origin: &str) -> Vec<Payload> {
    let t = || ("x-csrf-token", csrf.to_owned());
    let form = || {
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )
    };
    let json = || ("content-type", "application/json".to_owned());
    let mut flipped_case = csrf.to_owned();
    flipped_case = flipped_case
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    vec![
        p("no token", vec![]),
        p("empty token", vec![("x-csrf-token", String::new())]),
        p(
            "another session's token",
            vec![("x-csrf-token", foreign.to_owned())],
        ),
        p(
            "token with flipped letter case",
            vec![("x-csrf-token", flipped_case)],
        ),
        p(
            "token plus one character",
            vec![("x-csrf-token", format!("{csrf}A"))],
        ),
        p("token in the query", vec![]).query(format!(
            "?x-csrf-token={csrf}&csrfToken={csrf}&_csrf={csrf}"
        )),
        p("token in a form body", vec![form()]).body(format!("x-csrf-token={csrf}&_csrf={csrf}")),
        p("token in a JSON body", vec![json()]).body(format!("{{\"csrfToken\":\"{csrf}\"}}")),
        p(
            "token as a cookie",
            vec![("cookie", format!("x-csrf-token={csrf}"))],
        ),
        p(
            "token under X-XSRF-TOKEN",
            vec![("x-xsrf-token", csrf.to_owned())],
        ),
        p(
            "token under X-CSRFToken",
            vec![("x-csrftoken", csrf.to_owned())],
        ),
        p(
            "token under CSRF-Token",
            vec![("csrf-token", csrf.to_owned())],
        ),
        p("duplicated valid header", vec![t(), t()]),
        p(
            "valid then foreign header",
            vec![t(), ("x-csrf-token", foreign.to_owned())],
        ),
        p(
            "comma-joined tokens",
            vec![("x-csrf-token", format!("{csrf},{csrf}"))],
        ),
        p("lower-case post", vec![]).method(b"post"),
        p("mixed-case PoSt", vec![]).method(b"PoSt"),
        p("lower-case get is not GET", vec![]).method(b"get"),
        p("mixed-case GeT is not GET", vec![]).method(b"GeT"),
        p("lower-case delete", vec![]).method(b"delete"),
        p("made-up method", vec![]).method(b"PURGE"),
        p("PUT", vec![]).method(b"PUT"),
        p("PATCH", vec![]).method(b"PATCH"),
        p("DELETE", vec![]).method(b"DELETE"),
        p("_method in a form body", vec![form()]).body("_method=DELETE".into()),
        p("GET with _method param", vec![])
            .method(b"GET")
            .query("?_method=DELETE".into())
            .expect(400),
        p("GET with _METHOD param", vec![])
            .method(b"GET")
            .query("?_METHOD=post".into())
            .expect(400),
        p("POST with token and _method param", vec![t()])
            .query("?_method=DELETE".into())
            .expect(400),
        p(
            "cross-site Origin",
            vec![t(), ("origin", "http://evil.example".into())],
        ),
        p("Origin null", vec![t(), ("origin", "null".into())]),
        p(
            "Origin with a trailing slash",
            vec![t(), ("origin", format!("{origin}/"))],
        ),
        p(
            "Origin with another port",
            vec![t(), ("origin", "http://localhost:1".into())],
        ),
        p(
            "Origin https instead of http",
            vec![t(), ("origin", origin.replace("http://", "https://"))],
        ),
        p(
            "sibling-subdomain Origin",
            vec![
                t(),
                ("origin", origin.replace("localhost", "evil.localhost")),
            ],
        ),
        p(
            "two Origin headers, ours first",
            vec![
                t(),
                ("origin", origin.to_owned()),
                ("origin", "http://evil.example".into()),
            ],
        ),
        p(
            "Sec-Fetch-Site cross-site",
            vec![t(), ("sec-fetch-site", "cross-site".into())],
        ),
        p(
            "Sec-Fetch-Site same-site",
            vec![t(), ("sec-fetch-site", "same-site".into())],
        ),
        p(
            "Sec-Fetch-Site none",
            vec![t(), ("sec-fetch-site", "none".into())],
        ),
        p(
            "our Origin but Sec-Fetch-Site cross-site",
            vec![
                t(),
                ("origin", origin.to_owned()),
                ("sec-fetch-site", "cross-site".into()),
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_class_refuses_every_csrf_payload_before_the_upstream() {
    let (stack, ws) = stack_with_aggregate_and_websocket().await;
    let alice = Browser::new();
    stack.login(&alice).await;
    let csrf = stack.csrf(&alice).await;
    let other = Browser::new();
    stack.login(&other).await;
    let foreign = stack.csrf(&other).await;
    // (route class, unsafe method, path)
    let routes: Vec<(&str, Method, &str)> = vec![
        ("API route", Method::POST, "/api/orders/1"),
        ("API catch-all route", Method::DELETE, "/api/things/2"),
        ("route with a dead upstream", Method::PUT, "/dead/x"),
        ("aggregate", Method::POST, "/agg/home"),
        ("WebSocket route", Method::POST, "/ws/chat"),
        ("/bff/logout", Method::POST, "/bff/logout"),
        ("POST /bff/session", Method::POST, "/bff/session"),
        ("PUT /bff/login", Method::PUT, "/bff/login"),
        ("unknown /bff path", Method::POST, "/bff/admin"),
        ("path outside every route", Method::POST, "/nowhere"),
    ];
    let mut rows = 0;
    for (route, method, path) in &routes {
        for pl in payloads(&csrf, &foreign, &stack.base) {
            let name = format!("{route} × {}", pl.name);
            let m = pl.method.clone().unwrap_or_else(|| method.clone());
            let url = stack.url(&format!("{path}{}", pl.query));
            let hs: Vec<(&str, &str)> = pl.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = alice
                .request(m, &url, &hs, pl.body.clone())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.status.as_u16(), pl.expected, "{name}: {}", r.text());
            assert_eq!(
                r.header("content-type"),
                Some("application/problem+json"),
                "{name}"
            );
            assert!(
                r.set_cookie(common::COOKIE).is_none(),
                "{name}: touched the cookie"
            );
            assert_eq!(stack.upstream.count(), 0, "{name}: reached the upstream");
            assert_eq!(ws.count(), 0, "{name}: reached the WebSocket upstream");
            rows += 1;
        }
    }
    assert!(rows >= 10 * 39, "{rows} rows");
    // Logout was refused every time: the session is intact.
    let s = alice
        .get(&stack.url("/bff/session"))
        .await
        .expect("session");
    assert_eq!(
        s.status.as_u16(),
        200,
        "the session survived every rejection"
    );
    // Controls: the right token, from our origin, passes on the API and on logout.
    let ok = alice
        .request(
            Method::POST,
            &stack.url("/api/orders/1"),
            &[
                ("x-csrf-token", &csrf),
                ("origin", &stack.base),
                ("sec-fetch-site", "same-origin"),
            ],
            "",
        )
        .await
        .expect("control");
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.text());
    assert_eq!(stack.upstream.count(), 1);
    let out = alice
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf), ("origin", &stack.base)],
            "",
        )
        .await
        .expect("logout");
    assert!(
        out.status.is_success() || out.status.is_redirection(),
        "{}",
        out.status
    );
    common::leak::assert_logs_clean(&stack.idp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_an_ended_session_is_refused() {
    let stack = Stack::start().await;
    let alice = Browser::new();
    let old_cookie = stack.login(&alice).await;
    let old_csrf = stack.csrf(&alice).await;
    let logout = alice
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &old_csrf)],
            "",
        )
        .await
        .expect("logout");
    assert!(logout.status.is_success() || logout.status.is_redirection());
    stack.login(&alice).await;
    // (name, cookie, token, expected)
    let fresh = stack.csrf(&alice).await;
    let new_cookie = alice.cookie(common::COOKIE).expect("cookie");
    let cases = [
        (
            "old token, new session",
            new_cookie.clone(),
            old_csrf.clone(),
            403,
        ),
        (
            "old token, old cookie",
            old_cookie.clone(),
            old_csrf.clone(),
            401,
        ),
        (
            "new token, old cookie",
            old_cookie.clone(),
            fresh.clone(),
            401,
        ),
    ];
    for (name, cookie, token, expected) in cases {
        let r = Browser::new()
            .request(
                Method::POST,
                &stack.url("/api/orders/1"),
                &[
                    ("cookie", &format!("{}={cookie}", common::COOKIE)),
                    ("x-csrf-token", &token),
                ],
                "",
            )
            .await
            .expect(name);
        assert_eq!(r.status.as_u16(), expected, "{name}: {}", r.text());
    }
    assert_eq!(stack.upstream.count(), 0);
    assert_ne!(fresh, old_csrf, "a new session gets a new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_need_our_origin_and_a_session() {
    let (stack, ws) = stack_with_aggregate_and_websocket().await;
    let alice = Browser::new();
    let ticket = stack.login(&alice).await;
    let host = stack.base.trim_start_matches("http://").to_owned();
    let ours = stack.base.clone();
    let cookie = format!("Cookie: {COOKIE}={ticket}\r\n");
    let handshake = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // (name, path, extra header lines, expected status)
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("no Origin", "/ws/chat", cookie.clone(), 403),
        (
            "cross-site Origin",
            "/ws/chat",
            format!("{cookie}Origin: http://evil.example\r\n"),
            403,
        ),
        (
            "Origin null",
            "/ws/chat",
            format!("{cookie}Origin: null\r\n"),
            403,
        ),
        (
            "sibling-subdomain Origin",
            "/ws/chat",
            format!(
                "{cookie}Origin: {}\r\n",
                ours.replace("localhost", "evil.localhost")
            ),
            403,
        ),
        (
            "Origin with a trailing slash",
            "/ws/chat",
            format!("{cookie}Origin: {ours}/\r\n"),
            403,
        ),
        (
            "Origin https instead of http",
            "/ws/chat",
            format!(
                "{cookie}Origin: {}\r\n",
                ours.replace("http://", "https://")
            ),
            403,
        ),
        (
            "our Origin without a session",
            "/ws/chat",
            format!("Origin: {ours}\r\n"),
            401,
        ),
        (
            "our Origin with a planted session id",
            "/ws/chat",
            format!("Origin: {ours}\r\nCookie: {COOKIE}={}\r\n", "A".repeat(43)),
            401,
        ),
        (
            "upgrade on a route without websocket",
            "/api/orders/1",
            format!("{cookie}Origin: {ours}\r\n"),
            400,
        ),
        (
            "upgrade with a _method param",
            "/ws/chat?_method=POST",
            format!("{cookie}Origin: {ours}\r\n"),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, path, extra, expected) in &cases {
        let raw = exchange(
            port_of(&stack.base),
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\n{handshake}{extra}\r\n{}",
                sentinel(&host)
            )
            .as_bytes(),
        )
        .await;
        let got = statuses(&raw);
        if got.first() != Some(expected) || ws.count() != 0 || stack.upstream.count() != 0 {
            failures.push(format!(
                "{name}: {got:?} (want {expected}), upstreams saw {} + {}",
                ws.count(),
                stack.upstream.count()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Control: our Origin and the session reach the WebSocket upstream (which, not speaking
    // WebSocket, answers with a plain response that is passed on).
    let raw = exchange(
        port_of(&stack.base),
        format!("GET /ws/chat HTTP/1.1\r\nHost: {host}\r\n{handshake}{cookie}Origin: {ours}\r\nX-HTTP-Method-Override: POST\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_ne!(
        statuses(&raw).first(),
        Some(&403),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(ws.count(), 1, "the control reached the WebSocket upstream");
    assert!(!ws.requests()[0].has_header("cookie"));
    assert!(
        !ws.requests()[0].has_header("x-http-method-override"),
        "a method-override header is stripped, not forwarded"
    );
}
