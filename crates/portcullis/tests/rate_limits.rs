//! Brute-force and abuse limits: per client IP on login/callback and handshake, per username on
//! handshake; 429 with `Retry-After`, no provider call for a refused attempt, trusted proxies
//! honoured for the client address, and one budget across instances sharing Redis.

mod common;

use common::{Options, Stack};
use http::Method;
use serde_json::json;
use testkit::{
    browser::{Browser, Response},
    redis::{RedisOptions, RedisServer},
};

fn assert_limited(r: &Response, what: &str) {
    assert_eq!(r.status.as_u16(), 429, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert!(
        r.text().contains("urn:portcullis:problem:rate-limited"),
        "{what}"
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("delta-seconds");
    assert!(retry >= 1, "{what}: Retry-After {retry}");
}

async fn handshake(stack: &Stack, xff: &str, user: &str, password: &str) -> Response {
    Browser::new()
        .request(
            Method::POST,
            &stack.url("/bff/handshake"),
            &[
                ("content-type", "application/json"),
                ("origin", &stack.base),
                ("x-forwarded-for", xff),
            ],
            serde_json::to_vec(&json!({"username": user, "password": password})).expect("json"),
        )
        .await
        .expect("handshake")
}

fn handshake_stack(extra: &str) -> Options {
    Options {
        extra_oidc: "password_grant = true".into(),
        idp_password_grant: true,
        // The test client connects from 127.0.0.1: trusting it makes X-Forwarded-For the client.
        server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
        extra_toml: format!("\n[rate_limits]\n{extra}\n"),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_limited_per_client_ip() {
    let stack = Stack::start_with(Options {
        extra_toml: "\n[rate_limits]\nlogin_per_ip = \"3/min\"\n".into(),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    for i in 0..3 {
        let r = b.get(&stack.url("/bff/login")).await.expect("login");
        assert_eq!(r.status.as_u16(), 302, "attempt {i}");
    }
    assert_limited(
        &b.get(&stack.url("/bff/login")).await.expect("login"),
        "4th login",
    );
    // The callback shares the budget: no state lookups for a flooding client.
    assert_limited(
        &b.get(&stack.url("/bff/callback?state=x&code=y"))
            .await
            .expect("cb"),
        "callback",
    );
    // Without trusted proxies, a forged X-Forwarded-For does not buy a fresh budget.
    let forged = b
        .get_with(
            &stack.url("/bff/login"),
            &[("x-forwarded-for", "203.0.113.77")],
        )
        .await
        .expect("login");
    assert_limited(&forged, "forged X-Forwarded-For");
    assert_eq!(
        b.get(&stack.url("/healthz"))
            .await
            .expect("live")
            .status
            .as_u16(),
        200,
        "other endpoints unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_guessing_is_limited_per_username_and_per_ip() {
    let stack = Stack::start_with(handshake_stack(
        "handshake_per_username = \"3/min\"\nhandshake_per_ip = \"5/min\"",
    ))
    .await;
    let alice = stack.idp.username().to_owned();
    // Three wrong guesses for alice, each from another address.
    for i in 0..3 {
        let r = handshake(&stack, &format!("198.51.100.{i}"), &alice, "wrong").await;
        assert_eq!(r.status.as_u16(), 401, "guess {i}");
    }
    let before = stack.idp.stats().await.expect("stats").all_token_requests();
    // The fourth, even with the right password and a new address, is refused without asking the provider.
    assert_limited(
        &handshake(&stack, "198.51.100.99", &alice, stack.idp.password()).await,
        "per username",
    );
    // Case tricks share the username's budget.
    assert_limited(
        &handshake(&stack, "198.51.100.98", &alice.to_uppercase(), "x").await,
        "upper-case username",
    );
    assert_eq!(
        stack.idp.stats().await.expect("stats").all_token_requests(),
        before,
        "refused attempts never reach the provider"
    );

    // Spraying many usernames from one address hits the per-IP limit.
    for i in 0..5 {
        let r = handshake(&stack, "192.0.2.1", &format!("user{i}"), "x").await;
        assert_eq!(r.status.as_u16(), 401, "spray {i}");
    }
    assert_limited(
        &handshake(&stack, "192.0.2.1", "user-next", "x").await,
        "per IP",
    );
    // Another client is unaffected.
    let r = handshake(&stack, "192.0.2.2", "someone", "x").await;
    assert_eq!(r.status.as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_share_one_budget() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let stack = Stack::start_with(Options {
        session_extra: format!("store = \"redis\"\nredis_url = \"{}\"", redis.url()),
        instances: 2,
        extra_toml: "\n[rate_limits]\nlogin_per_ip = \"4/min\"\n".into(),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    for i in 0..4 {
        let r = b
            .get(&stack.url_on(i % 2, "/bff/login"))
            .await
            .expect("login");
        assert_eq!(r.status.as_u16(), 302, "attempt {i}");
    }
    for i in 0..2 {
        assert_limited(
            &b.get(&stack.url_on(i, "/bff/login")).await.expect("login"),
            "shared budget",
        );
    }
}
