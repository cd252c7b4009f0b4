//! `GET /bff/login?prompt=none`: renew a session without user interaction while the provider's
//! session lives; otherwise come back to the app with a fixed, non-sensitive error code.

mod common;

use common::{COOKIE, Stack};
use testkit::browser::Browser;

/// Follows the redirect chain from `/bff/login` through the provider and back; returns the
/// gateway callback's own response.
async fn silent(stack: &Stack, browser: &Browser, return_to: &str) -> testkit::browser::Response {
    let start = stack.url(&format!("/bff/login?prompt=none&returnTo={return_to}"));
    let chain = browser.follow(&start, 10).await.expect("redirects");
    chain
        .into_iter()
        .find(|r| r.url.path() == "/bff/callback")
        .expect("the provider sent the browser back to the callback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_provider_session_the_app_gets_login_required() {
    let stack = Stack::start().await;
    let b = Browser::new();
    let cb = silent(&stack, &b, "/inbox%3Ftab%3D2").await;
    assert_eq!(cb.status.as_u16(), 302, "{}", cb.text());
    assert_eq!(
        cb.location().as_deref(),
        Some("/inbox?tab=2&error=login_required")
    );
    assert!(cb.set_cookie(COOKIE).is_none(), "no session");
    assert_eq!(
        stack.idp.stats().await.expect("stats").code_grants(),
        0,
        "no code was exchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_provider_session_a_new_session_is_made_silently() {
    let stack = Stack::start().await;
    let b = Browser::new();
    let first = stack.login(&b).await;
    let cb = silent(&stack, &b, "/again").await;
    assert_eq!(cb.status.as_u16(), 302, "{}", cb.text());
    assert_eq!(cb.location().as_deref(), Some("/again"));
    let second = b.cookie(COOKIE).expect("new session cookie");
    assert_ne!(first, second, "a new session id");
    assert_eq!(
        b.get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        200
    );
    assert_eq!(stack.idp.stats().await.expect("stats").failed_logins, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_prompt_none_is_accepted() {
    let stack = Stack::start().await;
    let r = Browser::new()
        .get(&stack.url("/bff/login?prompt=consent"))
        .await
        .expect("login");
    assert_eq!(r.status.as_u16(), 400);
}
