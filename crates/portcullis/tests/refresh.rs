//! Token refresh against the real provider (rotating refresh tokens): single-flight under
//! concurrency, rotated tokens stored, and a refused refresh ends the session.
//!
//! The provider issues 20 s access tokens and the gateway refreshes 15 s before expiry, so a
//! token needs refreshing 5 s after it was issued.

mod common;

use std::time::Duration;

use common::{Options, Stack};
use testkit::browser::Browser;

fn short_tokens() -> Options {
    Options {
        access_token_ttl: 20,
        refresh_skew: "15s",
        ..Options::default()
    }
}

const UNTIL_STALE: Duration = Duration::from_millis(5_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_cause_exactly_one_refresh() {
    let stack = Stack::start_with(short_tokens()).await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let before = stack.session_record(&ticket).await.expect("session").record;
    tokio::time::sleep(UNTIL_STALE).await;
    stack.idp.reset_stats().await.expect("reset");

    let mut tasks = Vec::new();
    for i in 0..100 {
        let b = b.clone();
        let url = stack.url(&format!("/api/orders/{i}"));
        tasks.push(tokio::spawn(async move {
            b.get(&url).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("request"),
            200,
            "every request succeeds"
        );
    }
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(
        stats.refresh_grants(),
        1,
        "exactly one refresh at the provider: {stats:?}"
    );
    assert_eq!(stats.refresh_invalid_grant, 0);

    let after = stack.session_record(&ticket).await.expect("session").record;
    assert_ne!(
        after.access_token, before.access_token,
        "new access token stored"
    );
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "rotated refresh token stored"
    );
    let sent: Vec<String> = stack
        .upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(sent.len(), 100);
    assert!(
        sent.iter()
            .all(|h| *h == format!("Bearer {}", after.access_token)),
        "all used the refreshed token"
    );

    // The rotated refresh token works for the next refresh (the old one would be invalid_grant).
    tokio::time::sleep(UNTIL_STALE).await;
    assert_eq!(
        b.get(&stack.url("/api/orders/again"))
            .await
            .expect("r")
            .status
            .as_u16(),
        200
    );
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.refresh_grants(), 2);
    assert_eq!(stats.refresh_invalid_grant, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_ends_the_session() {
    let stack = Stack::start_with(short_tokens()).await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let record = stack.session_record(&ticket).await.expect("session").record;
    // Revoke the refresh token at the provider behind the gateway's back.
    let disco = stack.idp.discovery().await.expect("discovery");
    let revocation = disco["revocation_endpoint"]
        .as_str()
        .expect("revocation endpoint");
    let r = reqwest::Client::new()
        .post(revocation)
        .basic_auth(stack.idp.client_id(), Some(stack.idp.client_secret()))
        .form(&[
            ("token", record.refresh_token.as_deref().expect("rt")),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success());
    tokio::time::sleep(UNTIL_STALE).await;
    let before = stack.upstream.count();
    let api = b.get(&stack.url("/api/orders/1")).await.expect("api");
    assert_eq!(api.status.as_u16(), 401, "{}", api.text());
    assert_eq!(api.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        stack.upstream.count(),
        before,
        "no upstream call with a dead token"
    );
    assert!(
        stack.session_record(&ticket).await.is_none(),
        "the session is gone"
    );
    assert_eq!(
        b.get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        401
    );
}

/// oidc-provider's own policy, as a provider nobody tuned for this gateway runs it: a refresh
/// token only when `offline_access` was granted, and `offline_access` only with `prompt=consent`
/// (OIDC Core §11). The gateway asks for it, so sessions outlive their first access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_wants_consent_for_offline_access_still_issues_refresh_tokens() {
    let stack = Stack::start_with(Options {
        idp_stock_refresh_policy: true,
        ..short_tokens()
    })
    .await;
    let prompts = |path: &'static str| {
        let stack = &stack;
        async move {
            let r = Browser::new().get(&stack.url(path)).await.expect("login");
            let to = url::Url::parse(&r.location().expect("to the provider")).expect("url");
            to.query_pairs()
                .filter(|(k, _)| k == "prompt")
                .map(|(_, v)| v.into_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(prompts("/bff/login").await, ["consent"]);
    assert_eq!(
        prompts("/bff/login?prompt=none").await,
        ["none"],
        "none stands alone"
    );

    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let record = stack.session_record(&ticket).await.expect("session").record;
    assert!(record.refresh_token.is_some(), "offline_access was granted");
    tokio::time::sleep(UNTIL_STALE).await;
    stack.idp.reset_stats().await.expect("reset");
    let api = b.get(&stack.url("/api/orders/1")).await.expect("api");
    assert_eq!(api.status.as_u16(), 200, "{}", api.text());
    assert_eq!(stack.idp.stats().await.expect("stats").refresh_grants(), 1);

    // The control: without the prompt, the same provider grants no offline access.
    let without = Stack::start_with(Options {
        idp_stock_refresh_policy: true,
        extra_oidc: "prompt_consent_for_offline_access = false".into(),
        ..short_tokens()
    })
    .await;
    let b = Browser::new();
    let ticket = without.login(&b).await;
    let record = without
        .session_record(&ticket)
        .await
        .expect("session")
        .record;
    assert!(
        record.refresh_token.is_none(),
        "no prompt=consent, no refresh token"
    );
}
