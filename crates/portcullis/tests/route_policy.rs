//! Per-route policy through the real login and a real upstream: allowed methods (405 + `Allow`),
//! public routes (no session, no token, no cookie; cross-site unsafe requests still refused),
//! required claims and scopes (403). Every refusal happens before the upstream is contacted.

mod common;

use common::{Options, Stack};
use http::Method;
use serde_json::json;
use testkit::{
    browser::Browser,
    scripted::{Reply, ScriptedUpstream},
};

fn policy_toml(up: &ScriptedUpstream) -> String {
    format!(
        r#"
[[routes]]
prefix = "/p/readonly"
upstream = "{up}/readonly"
methods = ["GET"]

[[routes]]
prefix = "/p/public"
upstream = "{up}/public"
public = true

[[routes]]
prefix = "/p/verified"
upstream = "{up}/verified"
require_claims = {{ email_verified = "true", email = "alice@example.test" }}
require_scopes = ["email", "profile"]

[[routes]]
prefix = "/p/admins"
upstream = "{up}/admins"
require_claims = {{ groups = "admins" }}

[[routes]]
prefix = "/p/writers"
upstream = "{up}/writers"
require_scopes = ["orders:write"]
"#,
        up = up.url()
    )
}

async fn stack(up: &ScriptedUpstream) -> Stack {
    for p in ["/readonly", "/public", "/verified", "/admins", "/writers"] {
        up.on(p, Reply::ok(json!({"at": p})));
    }
    Stack::start_with(Options {
        extra_toml: policy_toml(up),
        ..Options::default()
    })
    .await
}

fn is_problem(r: &testkit::Response, status: u16, slug: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json().expect("json")["type"],
        format!("urn:portcullis:problem:{slug}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn methods_outside_the_list_are_refused_with_allow() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let b = Browser::new();
    s.login(&b).await;
    let csrf = s.csrf(&b).await;
    for method in [Method::POST, Method::DELETE, Method::PUT] {
        let r = b
            .request(
                method,
                &s.url("/p/readonly"),
                &[("x-csrf-token", &csrf)],
                "{}",
            )
            .await
            .expect("request");
        is_problem(&r, 405, "method-not-allowed");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(up.count(), 0, "no refused request reaches the upstream");
    let r = b.get(&s.url("/p/readonly")).await.expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_routes_need_no_session_and_carry_no_credentials() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let anon = Browser::new();
    let r = anon.get(&s.url("/p/public")).await.expect("anon get");
    assert_eq!(r.status, 200, "{}", r.text());
    // Same-origin POST without a session and without an anti-CSRF token: allowed.
    let r = anon
        .request_from(&s.base, Method::POST, &s.url("/p/public"), &[], "x")
        .await
        .expect("anon post");
    assert_eq!(r.status, 200, "{}", r.text());
    // Cross-site unsafe request: refused before the upstream.
    let before = up.count();
    let r = anon
        .request_from(
            "https://evil.example",
            Method::POST,
            &s.url("/p/public"),
            &[],
            "x",
        )
        .await
        .expect("cross-site post");
    is_problem(&r, 403, "cross-origin");
    assert_eq!(up.count(), before);

    // A logged-in browser: still no token and no cookie upstream.
    let b = Browser::new();
    s.login(&b).await;
    let r = b.get(&s.url("/p/public")).await.expect("get");
    assert_eq!(r.status, 200);
    for req in up.requests() {
        assert!(!req.has_header("authorization"), "{req:?}");
        assert!(!req.has_header("cookie"), "{req:?}");
    }
    // Non-public routes still need the session.
    let r = anon.get(&s.url("/p/readonly")).await.expect("anon");
    is_problem(&r, 401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_claims_or_scopes_are_forbidden() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let b = Browser::new();
    let cookie = s.login(&b).await;
    // The session keeps the claims policies need (email_verified is not a session claim) and
    // the granted scopes.
    let record = s.session_record(&cookie).await.expect("session").record;
    assert_eq!(record.claims.get("email_verified"), Some(&json!(true)));
    assert!(
        record.claims.get("name").is_none(),
        "only what policies need"
    );
    assert!(
        record.scopes.iter().any(|s| s == "email"),
        "{:?}",
        record.scopes
    );
    // What the provider granted (the token response's `scope`): `offline_access` too, since the
    // authorization request carried `prompt=consent` (OIDC Core §11), without which oidc-provider
    // drops it.
    assert!(
        record.scopes.iter().any(|s| s == "offline_access"),
        "{:?}",
        record.scopes
    );

    let r = b.get(&s.url("/p/verified")).await.expect("verified");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    for path in ["/p/admins", "/p/writers/1"] {
        let r = b.get(&s.url(path)).await.expect("forbidden");
        is_problem(&r, 403, "forbidden");
        assert!(!r.text().contains("admins") && !r.text().contains("orders:write"));
    }
    assert_eq!(up.count(), 1, "refused requests never reach the upstream");
}
