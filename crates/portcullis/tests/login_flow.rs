//! The user journey against the real OpenID Provider: log in through its form, read the session,
//! call an API with the token attached (the browser never sees it), change state with the CSRF
//! token, log out — and no token or cookie ever shows up in a browser-facing response or a log.

mod common;

use common::{COOKIE, Stack, running::captured_logs};
use http::Method;
use testkit::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_api_call_and_logout() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let mut browser_facing = Vec::<String>::new();

    // Log in through the provider's own login form.
    let outcome = browser
        .login_via_form(
            &stack.url("/bff/login?returnTo=/orders/7?tab=1"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login");
    let cb = &outcome.callback_response;
    assert_eq!(cb.status.as_u16(), 302);
    assert_eq!(outcome.final_location.as_deref(), Some("/orders/7?tab=1"));
    let set_cookie = cb.set_cookie(COOKIE).expect("session cookie");
    let ticket = browser.cookie(COOKIE).expect("cookie stored");
    assert_eq!(
        set_cookie,
        format!("{COOKIE}={ticket}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"),
        "cookie attributes must be exact"
    );
    assert_eq!(ticket.len(), 43, "256-bit ticket in base64url");
    assert_eq!(cb.header("cache-control"), Some("no-store"));
    browser_facing.push(format!("{:?}{}", cb.headers, cb.text()));

    // The session endpoint: claims allowed by config and the CSRF token, never a provider token.
    let s = browser
        .get(&stack.url("/bff/session"))
        .await
        .expect("session");
    assert_eq!(s.status.as_u16(), 200);
    assert_eq!(s.header("cache-control"), Some("no-store"));
    let body = s.json().expect("json");
    assert_eq!(body["authenticated"], true);
    assert_eq!(body["user"]["sub"], "alice");
    assert_eq!(body["user"]["email"], "alice@example.test");
    assert!(
        body["user"].get("email_verified").is_none(),
        "only configured claims are shown"
    );
    let csrf = body["csrfToken"].as_str().expect("csrf").to_owned();
    assert!(csrf.len() >= 43);
    assert!(body["expiresAt"].as_u64().is_some());
    browser_facing.push(format!("{:?}{}", s.headers, s.text()));

    // The server-side record holds the tokens (and only the server can open it).
    let record = stack
        .session_record(&ticket)
        .await
        .expect("live session")
        .record;
    let access_token = record.access_token.clone();
    let refresh_token = record.refresh_token.clone().expect("refresh token issued");
    let id_token = record.id_token.clone().expect("id token kept");

    // An API call: the upstream gets the bearer token, not the browser's cookie.
    let r = browser
        .get_with(
            &stack.url("/api/orders/42?x=1"),
            &[("x-forwarded-for", "6.6.6.6")],
        )
        .await
        .expect("api");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert!(
        r.header("set-cookie").is_none(),
        "upstream cookies are dropped"
    );
    browser_facing.push(format!("{:?}{}", r.headers, r.text()));
    let seen = stack.upstream.requests();
    let req = seen.last().expect("upstream reached");
    assert_eq!(req.path_and_query, "/orders/42?x=1");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {access_token}").as_str())
    );
    assert!(!req.has_header("cookie"));
    assert!(!req.has_header("x-csrf-token"));
    assert_eq!(
        req.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "client-supplied XFF is not trusted"
    );
    assert_eq!(req.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        req.header("x-forwarded-host"),
        Some(stack.base.trim_start_matches("http://"))
    );

    // A state-changing call with the token reaches the upstream, body intact.
    let r = browser
        .request(
            Method::POST,
            &stack.url("/api/orders/echo-body"),
            &[
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
                ("origin", &stack.base),
            ],
            r#"{"item":"tea"}"#,
        )
        .await
        .expect("post");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let posted = stack
        .upstream
        .requests()
        .last()
        .cloned()
        .expect("post reached upstream");
    assert_eq!(posted.method, "POST");
    assert_eq!(posted.body_text(), r#"{"item":"tea"}"#);
    assert!(!posted.has_header("x-csrf-token"));

    // Logout: revocation at the provider, session gone, cookie expired, end-session URL without tokens.
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
    assert_eq!(out.header("cache-control"), Some("no-store"));
    assert_eq!(
        out.set_cookie(COOKIE).as_deref(),
        Some(format!("{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0").as_str())
    );
    let logout_url = url::Url::parse(
        out.json().expect("json")["logoutUrl"]
            .as_str()
            .expect("logoutUrl"),
    )
    .expect("url");
    assert!(logout_url.as_str().starts_with(&stack.idp.issuer()));
    let q: Vec<(String, String)> = logout_url.query_pairs().into_owned().collect();
    assert!(q.contains(&("client_id".into(), stack.idp.client_id().into())));
    assert!(q.contains(&(
        "post_logout_redirect_uri".into(),
        format!("{}/", stack.base)
    )));
    assert!(
        !q.iter().any(|(k, _)| k == "id_token_hint"),
        "the ID token never reaches the browser"
    );
    browser_facing.push(format!("{:?}{}", out.headers, out.text()));
    assert!(
        stack.idp.stats().await.expect("stats").revocations >= 1,
        "refresh token revoked at the provider"
    );

    // Replaying the old cookie after logout gets nothing.
    let again = browser
        .get_with(
            &stack.url("/bff/session"),
            &[("cookie", &format!("{COOKIE}={ticket}"))],
        )
        .await
        .expect("session");
    assert_eq!(again.status.as_u16(), 401);
    assert_eq!(
        again.header("content-type"),
        Some("application/problem+json")
    );
    let api = browser
        .get_with(
            &stack.url("/api/orders"),
            &[("cookie", &format!("{COOKIE}={ticket}"))],
        )
        .await
        .expect("api");
    assert_eq!(api.status.as_u16(), 401, "never a redirect for API calls");
    assert!(stack.session_record(&ticket).await.is_none());

    // No secret anywhere the browser or the logs can see.
    let logs = captured_logs();
    for (name, secret) in [
        ("access token", access_token.as_str()),
        ("refresh token", refresh_token.as_str()),
        ("ID token", id_token.as_str()),
        ("session ticket", ticket.as_str()),
        ("client secret", stack.idp.client_secret()),
    ] {
        for (i, text) in browser_facing.iter().enumerate() {
            if name != "session ticket" {
                assert!(
                    !text.contains(secret),
                    "{name} leaked in browser-facing response #{i}"
                );
            }
        }
        assert!(!logs.contains(secret), "{name} leaked into the logs");
    }
    assert!(!logs.is_empty(), "the log capture works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints() {
    let stack = Stack::start().await;
    let b = Browser::new();
    assert_eq!(
        b.get(&stack.url("/healthz"))
            .await
            .expect("healthz")
            .status
            .as_u16(),
        200
    );
    let ready = b.get(&stack.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status.as_u16(), 200);
    assert_eq!(ready.json().expect("json")["idp"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_replaces_the_old_session() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let first = stack.login(&browser).await;
    let second = stack.login(&browser).await;
    assert_ne!(first, second, "a new id on every login");
    assert!(
        stack.session_record(&first).await.is_none(),
        "the previous session was ended"
    );
    assert!(stack.session_record(&second).await.is_some());
}
