//! Anti-CSRF: every state-changing request needs the session's token in `X-CSRF-Token`, from our
//! own origin; every rejection happens before any upstream is contacted.

mod common;

use common::{COOKIE, Stack};
use http::Method;
use testkit::browser::Browser;

/// (name, method, url, headers, body, expected status)
type Case<'a> = (
    &'a str,
    Method,
    String,
    Vec<(&'a str, String)>,
    &'a str,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_without_a_valid_token_never_reach_the_upstream() {
    let stack = Stack::start().await;
    let alice = Browser::new();
    stack.login(&alice).await;
    let csrf = stack.csrf(&alice).await;
    let other = Browser::new();
    stack.login(&other).await;
    let foreign = stack.csrf(&other).await;
    let origin = stack.base.clone();
    let api = stack.url("/api/orders/1");
    let api_q = stack.url(&format!(
        "/api/orders/1?x-csrf-token={csrf}&csrfToken={csrf}"
    ));
    let bad_char = format!("{}*", &csrf[..42]);

    let cases: Vec<Case> = vec![
        ("no token", Method::POST, api.clone(), vec![], "", 403),
        (
            "empty token",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", String::new())],
            "",
            403,
        ),
        (
            "wrong token",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", "A".repeat(43))],
            "",
            403,
        ),
        (
            "another session's token",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", foreign.clone())],
            "",
            403,
        ),
        (
            "truncated token",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", csrf[..42].to_owned())],
            "",
            403,
        ),
        (
            "malformed token",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", bad_char)],
            "",
            403,
        ),
        ("token in the query", Method::POST, api_q, vec![], "", 403),
        (
            "token in the body",
            Method::POST,
            api.clone(),
            vec![("content-type", "application/x-www-form-urlencoded".into())],
            "x-csrf-token=TOKEN",
            403,
        ),
        (
            "token as a cookie",
            Method::POST,
            api.clone(),
            vec![("cookie", format!("x-csrf-token={csrf}"))],
            "",
            403,
        ),
        (
            "duplicated header",
            Method::POST,
            api.clone(),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("x-csrf-token", csrf.clone()),
            ],
            "",
            403,
        ),
        (
            "cross-origin Origin",
            Method::POST,
            api.clone(),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("origin", "http://evil.example".into()),
            ],
            "",
            403,
        ),
        (
            "sibling-subdomain Origin",
            Method::POST,
            api.clone(),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("origin", origin.replace("localhost", "evil.localhost")),
            ],
            "",
            403,
        ),
        (
            "null Origin",
            Method::POST,
            api.clone(),
            vec![("x-csrf-token", csrf.clone()), ("origin", "null".into())],
            "",
            403,
        ),
        (
            "Sec-Fetch-Site cross-site",
            Method::POST,
            api.clone(),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("sec-fetch-site", "cross-site".into()),
            ],
            "",
            403,
        ),
        (
            "Sec-Fetch-Site same-site",
            Method::POST,
            api.clone(),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("sec-fetch-site", "same-site".into()),
            ],
            "",
            403,
        ),
        (
            "PUT without token",
            Method::PUT,
            api.clone(),
            vec![],
            "",
            403,
        ),
        (
            "PATCH without token",
            Method::PATCH,
            api.clone(),
            vec![],
            "",
            403,
        ),
        (
            "DELETE without token",
            Method::DELETE,
            api.clone(),
            vec![],
            "",
            403,
        ),
        (
            "lower-case post",
            Method::from_bytes(b"post").expect("method"),
            api.clone(),
            vec![],
            "",
            403,
        ),
        (
            "made-up method",
            Method::from_bytes(b"PURGE").expect("method"),
            api.clone(),
            vec![],
            "",
            403,
        ),
        (
            "GET with _method param",
            Method::GET,
            stack.url("/api/orders/1?_method=DELETE"),
            vec![],
            "",
            400,
        ),
        (
            "logout without token",
            Method::POST,
            stack.url("/bff/logout"),
            vec![],
            "",
            403,
        ),
        (
            "logout cross-origin",
            Method::POST,
            stack.url("/bff/logout"),
            vec![
                ("x-csrf-token", csrf.clone()),
                ("origin", "http://evil.example".into()),
            ],
            "",
            403,
        ),
    ];
    for (name, method, url, headers, body, expected) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = alice
            .request(method, &url, &hs, body.replace("TOKEN", &csrf))
            .await
            .expect(name);
        assert_eq!(r.status.as_u16(), expected, "{name}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{name}"
        );
        if expected == 403 {
            assert!(r.text().contains("urn:portcullis:problem:"), "{name}");
        }
    }
    assert_eq!(
        stack.upstream.count(),
        0,
        "no rejected request may reach the upstream"
    );

    // Control: the same request with the right token and our Origin goes through.
    let ok = alice
        .request(
            Method::POST,
            &api,
            &[
                ("x-csrf-token", &csrf),
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
            ],
            "",
        )
        .await
        .expect("control");
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.text());
    assert_eq!(stack.upstream.count(), 1);
    // Method-override headers are stripped, never honoured: the upstream gets the method the
    // CSRF layer judged, and no header that could turn it into another one.
    for (method, headers) in [
        (
            Method::POST,
            vec![
                ("x-csrf-token", csrf.as_str()),
                ("x-http-method-override", "DELETE"),
                ("x-http-method", "DELETE"),
                ("x-method-override", "DELETE"),
            ],
        ),
        (Method::GET, vec![("x-http-method-override", "DELETE")]),
    ] {
        stack.upstream.clear();
        let r = alice
            .request(method.clone(), &api, &headers, "")
            .await
            .expect("override");
        assert_eq!(r.status.as_u16(), 200, "{method}: {}", r.text());
        let seen = stack.upstream.last().expect("proxied");
        assert_eq!(seen.method, method.as_str());
        for name in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            assert!(
                !seen.has_header(name),
                "{method}: {name} reached the upstream"
            );
        }
    }
    // Safe methods need no token.
    let get = alice.get(&api).await.expect("get");
    assert_eq!(get.status.as_u16(), 200);
    // The session survived every rejection.
    assert_eq!(
        alice
            .get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_request_without_a_session_is_401_and_without_a_token_403() {
    let stack = Stack::start().await;
    let anon = Browser::new();
    let with_token = anon
        .request(
            Method::POST,
            &stack.url("/api/orders"),
            &[("x-csrf-token", &"A".repeat(43))],
            "",
        )
        .await
        .expect("post");
    assert_eq!(with_token.status.as_u16(), 401);
    let without = anon
        .request(Method::POST, &stack.url("/api/orders"), &[], "")
        .await
        .expect("post");
    assert_eq!(without.status.as_u16(), 403);
    let get = anon.get(&stack.url("/api/orders")).await.expect("get");
    assert_eq!(
        get.status.as_u16(),
        401,
        "API calls without a session get 401, never a redirect"
    );
    assert!(get.header("location").is_none());
    assert_eq!(stack.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_tricks_get_no_session() {
    let stack = Stack::start().await;
    let alice = Browser::new();
    let ticket = stack.login(&alice).await;
    let anon = Browser::new();
    let mut flipped = ticket.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let cases = [
        (
            "look-alike lower-case prefix",
            format!("__host-SessionID={ticket}"),
        ),
        (
            "look-alike __Secure- prefix",
            format!("__Secure-SessionID={ticket}"),
        ),
        ("no prefix", format!("SessionID={ticket}")),
        (
            "duplicated session cookie",
            format!("{COOKIE}={ticket}; {COOKIE}={ticket}"),
        ),
        ("bit-flipped ticket", format!("{COOKIE}={flipped}")),
        ("truncated ticket", format!("{COOKIE}={}", &ticket[..40])),
        (
            "oversized ticket",
            format!("{COOKIE}={ticket}{}", "A".repeat(4000)),
        ),
        ("planted id", format!("{COOKIE}={}", "A".repeat(43))),
    ];
    for (name, cookie) in cases {
        let r = anon
            .get_with(&stack.url("/bff/session"), &[("cookie", &cookie)])
            .await
            .expect(name);
        assert_eq!(r.status.as_u16(), 401, "{name}");
    }
    // The real cookie still works afterwards (a bit flip did not destroy the session).
    let ok = anon
        .get_with(
            &stack.url("/bff/session"),
            &[("cookie", &format!("{COOKIE}={ticket}"))],
        )
        .await
        .expect("ok");
    assert_eq!(ok.status.as_u16(), 200);
    // A cookie header flood is refused by the server's header limit.
    let flood = format!("Cookie: {}\r\n", "a=b; ".repeat(20_000));
    let status = common::raw_status(&stack.base, "/bff/session", &flood).await;
    assert!(
        status == 431 || status == 400 || status == 0,
        "flood answered {status}"
    );
}
