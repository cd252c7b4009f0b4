//! The login state: single use, bound to the browser that started the login, parallel tabs, and
//! `returnTo` that can only ever send the browser to a path of our own origin.

mod common;

use common::{COOKIE, Stack};
use testkit::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_single_use_and_bound_to_the_browser() {
    let stack = Stack::start().await;
    let start = stack.url("/bff/login?returnTo=/a");

    // Replay: the same callback twice.
    let b = Browser::new();
    let callback = b
        .login_until_callback(&start, stack.idp.username(), stack.idp.password())
        .await
        .expect("login");
    let first = b.get(&callback).await.expect("callback");
    assert_eq!(first.status.as_u16(), 302);
    let replay = Browser::new();
    for c in b.cookies() {
        replay.insert_cookie(c);
    }
    replay.remove_cookie(COOKIE);
    let second = replay.get(&callback).await.expect("replay");
    assert_eq!(second.status.as_u16(), 401, "a state works once");
    assert!(second.set_cookie(COOKIE).is_none());
    assert!(
        second
            .text()
            .contains("urn:portcullis:problem:login-failed")
    );

    // Foreign browser: a callback URL (code + state) stolen into another browser.
    let victim = Browser::new();
    let stolen = victim
        .login_until_callback(&start, stack.idp.username(), stack.idp.password())
        .await
        .expect("login");
    let attacker = Browser::new();
    let r = attacker.get(&stolen).await.expect("callback");
    assert_eq!(r.status.as_u16(), 401, "state not started by this browser");
    // The attempt consumed the state: the victim's own callback fails too (fail safe, no session for anyone).
    assert_eq!(victim.get(&stolen).await.expect("cb").status.as_u16(), 401);

    // Tampered, missing and duplicated parameters.
    let b = Browser::new();
    let cb = b
        .login_until_callback(&start, stack.idp.username(), stack.idp.password())
        .await
        .expect("login");
    let url = url::Url::parse(&cb).expect("url");
    let state: String = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let code: String = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let base = stack.url("/bff/callback");
    let mut tampered = state.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for (name, q, expected) in [
        (
            "tampered state",
            format!("code={code}&state={tampered}"),
            401,
        ),
        ("no state", format!("code={code}"), 401),
        (
            "duplicated state",
            format!("code={code}&state={state}&state={state}"),
            400,
        ),
        (
            "duplicated code",
            format!("code={code}&code=x&state={state}"),
            400,
        ),
    ] {
        let r = b.get(&format!("{base}?{q}")).await.expect(name);
        assert_eq!(r.status.as_u16(), expected, "{name}: {}", r.text());
        assert!(r.set_cookie(COOKIE).is_none(), "{name}");
    }
    // The untouched callback still works: failed attempts above did not consume it.
    assert_eq!(b.get(&cb).await.expect("cb").status.as_u16(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tabs_do_not_break_each_other() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    // Two tabs start logins before either finishes.
    let tab1 = browser
        .login_until_callback(
            &stack.url("/bff/login?returnTo=/one"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("tab 1");
    let tab2 = browser
        .login_until_callback(
            &stack.url("/bff/login?returnTo=/two"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("tab 2");
    let r2 = browser.get(&tab2).await.expect("cb2");
    assert_eq!(r2.status.as_u16(), 302);
    assert_eq!(r2.location().as_deref(), Some("/two"));
    let r1 = browser.get(&tab1).await.expect("cb1");
    assert_eq!(r1.status.as_u16(), 302, "{}", r1.text());
    assert_eq!(r1.location().as_deref(), Some("/one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_never_leaves_the_origin() {
    let stack = Stack::start().await;
    let payloads = [
        "//evil.com",
        "//evil.com/path",
        "/\\evil.com",
        "\\/evil.com",
        "https://evil.com",
        "http://evil.com",
        "HTTPS://evil.com",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.com",
        "/%2F/evil.com",
        "/%2f%2fevil.com",
        "/%5Cevil.com",
        "%2F%2Fevil.com",
        "/%252F%252Fevil.com",
        "/\t/evil.com",
        "/\r\n/evil.com",
        "/%09/evil.com",
        "/%0d%0a/evil.com",
        "/\u{3000}/evil.com",
        "/\u{FF0F}evil.com",
        "//evil.com@localhost",
        "/@evil.com",
        "///evil.com",
        " //evil.com",
    ];
    for p in payloads {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("returnTo", p)
            .finish();
        let browser = Browser::new();
        let outcome = browser
            .login_via_form(
                &stack.url(&format!("/bff/login?{q}")),
                stack.idp.username(),
                stack.idp.password(),
            )
            .await
            .expect(p);
        let location = outcome.final_location.expect("location");
        let allowed = location == "/" || (p == "/@evil.com" && location == "/@evil.com");
        assert!(allowed, "{p:?} led to Location {location:?}");
        let resolved = url::Url::parse(&stack.base)
            .expect("base")
            .join(&location)
            .expect("join");
        assert_eq!(
            resolved.origin().ascii_serialization(),
            stack.base,
            "{p:?} left the origin"
        );
    }
    // Ordinary paths survive.
    let browser = Browser::new();
    let ok = browser
        .login_via_form(
            &stack.url("/bff/login?returnTo=%2Forders%3Fpage%3D2"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("ok");
    assert_eq!(ok.final_location.as_deref(), Some("/orders?page=2"));
}
