//! `POST /bff/handshake` against the real OpenID Provider with the password grant on: a session
//! exactly like the callback's, one uniform 401 for bad credentials, and the request-shape guards
//! (JSON only, same Origin, body limit) that refuse before the provider is ever contacted.

mod common;

use common::{COOKIE, Options, Stack, running::captured_logs};
use http::Method;
use serde_json::json;
use testkit::browser::{Browser, Response};

/// A password no other test uses, so the log check below is meaningful in a shared process.
const WRONG_PASSWORD: &str = "Wr0ng-pa55word-handshake-7f3a";

async fn enabled() -> Stack {
    Stack::start_with(Options {
        extra_oidc: "password_grant = true".into(),
        idp_password_grant: true,
        ..Options::default()
    })
    .await
}

async fn post(
    stack: &Stack,
    browser: &Browser,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> Response {
    browser
        .request(Method::POST, &stack.url("/bff/handshake"), headers, body)
        .await
        .expect("handshake request")
}

/// A same-origin JSON handshake, as the client SDK sends it.
async fn handshake(stack: &Stack, browser: &Browser, username: &str, password: &str) -> Response {
    let body =
        serde_json::to_vec(&json!({ "username": username, "password": password })).expect("json");
    post(
        stack,
        browser,
        &[
            ("content-type", "application/json"),
            ("origin", &stack.base),
            ("sec-fetch-site", "same-origin"),
        ],
        body,
    )
    .await
}

async fn token_requests(stack: &Stack) -> u64 {
    stack.idp.stats().await.expect("stats").all_token_requests()
}

fn assert_problem(r: &Response, status: u16, kind: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.set_cookie(COOKIE).is_none(), "no session on a refusal");
    assert_eq!(
        r.json().expect("problem json")["type"],
        format!("urn:portcullis:problem:{kind}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_creates_a_session_like_the_callback() {
    let stack = enabled().await;
    let browser = Browser::new();
    let before = stack.idp.stats().await.expect("stats");

    let r = handshake(&stack, &browser, stack.idp.username(), stack.idp.password()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let ticket = browser.cookie(COOKIE).expect("cookie stored");
    assert_eq!(
        r.set_cookie(COOKIE).as_deref(),
        Some(
            format!("{COOKIE}={ticket}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800")
                .as_str()
        ),
        "cookie attributes must be exact"
    );
    assert_eq!(ticket.len(), 43);
    let after = stack.idp.stats().await.expect("stats");
    assert_eq!(after.password_grants, before.password_grants + 1);
    assert_eq!(
        after.all_token_requests(),
        before.all_token_requests() + 1,
        "one password grant, nothing else"
    );

    // The same JSON as GET /bff/session, and never a provider token.
    let body = r.json().expect("json");
    let session = browser
        .get(&stack.url("/bff/session"))
        .await
        .expect("session");
    assert_eq!(session.status.as_u16(), 200);
    assert_eq!(body, session.json().expect("json"));
    assert_eq!(body["authenticated"], true);
    assert_eq!(body["user"]["sub"], "alice");
    assert_eq!(body["user"]["email"], "alice@example.test");
    assert!(
        body["user"].get("email_verified").is_none(),
        "claims filtered by oidc.session_claims"
    );
    let csrf = body["csrfToken"].as_str().expect("csrfToken").to_owned();
    let expires_at = body["expiresAt"].as_u64().expect("expiresAt");
    let obj = body.as_object().expect("object");
    assert_eq!(obj.len(), 4, "exactly the session fields: {body}");

    // The server-side record: tokens, absolute expiry, indexed by subject.
    let record = stack
        .session_record(&ticket)
        .await
        .expect("live session")
        .record;
    assert_eq!(record.sub, "alice");
    assert_eq!(record.iss, stack.idp.issuer());
    assert_eq!(record.csrf_token, csrf);
    assert_eq!(record.absolute_expires_at, expires_at);
    assert!(record.absolute_expires_at >= record.created_at + 28_800 - 1);
    let access_token = record.access_token.clone();
    let refresh_token = record.refresh_token.clone().expect("refresh token");
    let id_token = record.id_token.clone().expect("ID token kept");
    let text = r.text();
    for secret in [&access_token, &refresh_token, &id_token] {
        assert!(!text.contains(secret.as_str()), "a provider token leaked");
        assert!(
            !format!("{:?}", r.headers).contains(secret.as_str()),
            "a provider token leaked in a header"
        );
    }
    let indexed = stack
        .state()
        .sessions
        .sessions_of_subject(&record.iss, "alice")
        .await
        .expect("index");
    assert!(indexed.contains(&stack.session_record(&ticket).await.expect("s").key));

    // An API call carries the password grant's access token.
    let api = browser.get(&stack.url("/api/orders/1")).await.expect("api");
    assert_eq!(api.status.as_u16(), 200, "{}", api.text());
    let seen = stack.upstream.requests();
    let req = seen.last().expect("upstream reached");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {access_token}").as_str())
    );
    assert!(!req.has_header("cookie"));

    // And the CSRF token works for a state-changing call.
    let out = browser
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf), ("origin", &stack.base)],
            "",
        )
        .await
        .expect("logout");
    assert_eq!(out.status.as_u16(), 200, "{}", out.text());

    // Nothing secret in the logs: the password, the tokens; the username only as a digest
    // (the session's `sub` is logged, as for the callback, so only the password is checked
    // for the username's fixture value).
    let logs = captured_logs();
    for (name, secret) in [
        ("password", stack.idp.password()),
        ("access token", access_token.as_str()),
        ("refresh token", refresh_token.as_str()),
        ("ID token", id_token.as_str()),
        ("client secret", stack.idp.client_secret()),
    ] {
        assert!(!logs.contains(secret), "{name} leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_ends_the_previous_session() {
    let stack = enabled().await;
    let browser = Browser::new();
    let first = stack.login(&browser).await;
    let r = handshake(&stack, &browser, stack.idp.username(), stack.idp.password()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let second = browser.cookie(COOKIE).expect("cookie");
    assert_ne!(first, second, "a new id on every login");
    assert!(
        stack.session_record(&first).await.is_none(),
        "the previous session was ended"
    );
    assert!(stack.session_record(&second).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_one_uniform_401() {
    let stack = enabled().await;
    let browser = Browser::new();
    let wrong_password = handshake(&stack, &browser, stack.idp.username(), WRONG_PASSWORD).await;
    let unknown_user = handshake(&stack, &browser, "mallory", stack.idp.password()).await;
    let both_wrong = handshake(&stack, &browser, "mallory", WRONG_PASSWORD).await;
    for r in [&wrong_password, &unknown_user, &both_wrong] {
        assert_problem(r, 401, "login-failed");
    }
    assert_eq!(
        wrong_password.body, unknown_user.body,
        "byte-identical bodies: no user enumeration"
    );
    assert_eq!(wrong_password.body, both_wrong.body);
    for name in ["content-type", "cache-control", "www-authenticate"] {
        assert_eq!(
            wrong_password.header(name),
            unknown_user.header(name),
            "{name}"
        );
    }
    assert!(browser.cookie(COOKIE).is_none());
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.failed_password_grants, 3, "the provider decided each");
    assert_eq!(stats.password_grants, 0);

    let logs = captured_logs();
    assert!(
        !logs.contains(WRONG_PASSWORD),
        "a password leaked into the logs"
    );
    assert!(!logs.contains("mallory"), "a username leaked into the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_bodies_are_accepted() {
    let stack = enabled().await;
    let browser = Browser::new();
    let before = token_requests(&stack).await;
    let origin = stack.base.clone();
    let form = format!(
        "username={}&password={}",
        stack.idp.username(),
        stack.idp.password()
    );
    let json_text =
        json!({"username": stack.idp.username(), "password": stack.idp.password()}).to_string();
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", form.clone()),
        ("text/plain", json_text.clone()),
        ("text/plain;charset=UTF-8", json_text.clone()),
        ("multipart/form-data; boundary=x", json_text.clone()),
        ("application/json-patch+json", json_text.clone()),
    ] {
        let r = post(
            &stack,
            &browser,
            &[("content-type", content_type), ("origin", &origin)],
            body,
        )
        .await;
        assert_problem(&r, 415, "unsupported-media-type");
    }
    // No Content-Type at all.
    let r = post(&stack, &browser, &[("origin", &origin)], json_text.clone()).await;
    assert_problem(&r, 415, "unsupported-media-type");
    // A cross-site HTML form post, as a browser would send it.
    let r = browser
        .request_from(
            "https://evil.example",
            Method::POST,
            &stack.url("/bff/handshake"),
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await
        .expect("form post");
    assert_eq!(r.status.as_u16(), 403, "{}", r.text());

    // Parameters on application/json are fine.
    let r = post(
        &stack,
        &browser,
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("origin", &origin),
        ],
        json_text,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(
        token_requests(&stack).await,
        before + 1,
        "only the JSON request reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_is_required_and_must_be_ours() {
    let stack = enabled().await;
    let browser = Browser::new();
    let before = token_requests(&stack).await;
    let body =
        json!({"username": stack.idp.username(), "password": stack.idp.password()}).to_string();
    let ct = ("content-type", "application/json");
    let port = stack.base.rsplit(':').next().expect("port").to_owned();
    let sibling = format!("http://evil.localhost:{port}");
    let other_port = "http://localhost:1".to_owned();
    let https = stack.base.replace("http://", "https://");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![ct],
        vec![ct, ("origin", "null")],
        vec![ct, ("origin", "https://evil.example")],
        vec![ct, ("origin", &sibling)],
        vec![ct, ("origin", &other_port)],
        vec![ct, ("origin", &https)],
        vec![ct, ("origin", &stack.base), ("origin", &stack.base)],
        vec![ct, ("origin", &stack.base), ("sec-fetch-site", "same-site")],
        vec![
            ct,
            ("origin", &stack.base),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for headers in &cases {
        let r = post(&stack, &browser, headers, body.clone()).await;
        assert_problem(&r, 403, "cross-origin");
    }
    assert_eq!(token_requests(&stack).await, before, "no provider call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused() {
    let stack = enabled().await;
    let browser = Browser::new();
    let before = token_requests(&stack).await;
    let headers = [
        ("content-type", "application/json"),
        ("origin", stack.base.as_str()),
    ];

    // Over 4 KiB: 413, whether Content-Length says so or not (a chunked body is cut off too).
    let padding = "x".repeat(5000);
    let big = json!({"username": "alice", "password": padding}).to_string();
    let r = post(&stack, &browser, &headers, big.clone()).await;
    assert_problem(&r, 413, "payload-too-large");
    let chunked = reqwest::Client::new()
        .post(stack.url("/bff/handshake"))
        .header("content-type", "application/json")
        .header("origin", &stack.base)
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(
            futures_util::stream::iter(
                big.into_bytes()
                    .chunks(1000)
                    .map(|c| {
                        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(
                            c.to_vec(),
                        )))
                    })
                    .collect::<Vec<_>>(),
            ),
        )))
        .send()
        .await
        .expect("chunked");
    assert_eq!(chunked.status().as_u16(), 413);

    for body in [
        String::new(),
        "not json".into(),
        "[]".into(),
        json!({"username": "alice"}).to_string(),
        json!({"password": "wonderland"}).to_string(),
        json!({"username": "", "password": "wonderland"}).to_string(),
        json!({"username": "alice", "password": ""}).to_string(),
        json!({"username": "alice", "password": 12345}).to_string(),
        json!({"username": ["alice"], "password": "wonderland"}).to_string(),
        json!({"username": "alice", "password": "wonderland", "scope": "admin"}).to_string(),
        r#"{"username":"alice","password":"wonderland","password":"x"}"#.into(),
    ] {
        let r = post(&stack, &browser, &headers, body.clone()).await;
        assert_problem(&r, 400, "bad-request");
        assert!(!r.text().contains("wonderland"), "{body}");
    }
    assert_eq!(token_requests(&stack).await, before, "no provider call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_by_default() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let r = handshake(&stack, &browser, stack.idp.username(), stack.idp.password()).await;
    assert_problem(&r, 404, "not-found");
    // Off, the endpoint does not exist for any method: no 405 whose `Allow` offers a POST that
    // would be a 404 (RFC 9110 §15.5.6: `Allow` lists the methods the resource supports).
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let r = browser
            .request(method.clone(), &stack.url("/bff/handshake"), &[], "")
            .await
            .expect("request");
        assert_eq!(r.status.as_u16(), 404, "{method}");
        assert_eq!(r.header("allow"), None, "{method}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{method}");
    }
    assert_eq!(token_requests(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_on_other_methods_are_405_with_allow_post() {
    let stack = enabled().await;
    let browser = Browser::new();
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let r = browser
            .request(
                method.clone(),
                &stack.url("/bff/handshake"),
                &[("origin", &stack.base)],
                "",
            )
            .await
            .expect("request");
        assert_problem(&r, 405, "method-not-allowed");
        assert_eq!(r.header("allow"), Some("POST"), "{method}");
    }
    assert_eq!(token_requests(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_refusing_the_grant_or_down_is_503() {
    // Portcullis is configured for the password grant, the provider's client is not: a
    // configuration problem for every user, not a credentials failure.
    let mut stack = Stack::start_with(Options {
        extra_oidc: "password_grant = true".into(),
        ..Options::default()
    })
    .await;
    let browser = Browser::new();
    let r = handshake(&stack, &browser, stack.idp.username(), stack.idp.password()).await;
    assert_problem(&r, 503, "unavailable");

    // The provider is gone.
    let idp = std::mem::replace(
        &mut stack.idp,
        testkit::idp::Idp::start(testkit::idp::IdpOptions::new("http://127.0.0.1:1/cb"))
            .await
            .expect("placeholder IdP"),
    );
    idp.stop().await.expect("stop");
    let r = handshake(&stack, &browser, stack.idp.username(), stack.idp.password()).await;
    assert_problem(&r, 503, "unavailable");
}
