//! The reverse proxy: only configured routes, no escape from a route prefix, upstream failures as
//! problem+json, body limits, and streaming.

mod common;

use common::{Options, Stack, raw_status};
use http::Method;
use testkit::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_path_escapes() {
    let stack = Stack::start().await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let cookie = format!("Cookie: {}={ticket}\r\n", common::COOKIE);

    // Longest prefix wins; the prefix is replaced by the upstream base path.
    assert_eq!(
        b.get(&stack.url("/api/orders/9"))
            .await
            .expect("r")
            .status
            .as_u16(),
        200
    );
    assert_eq!(
        stack.upstream.last().expect("req").path_and_query,
        "/orders/9"
    );
    assert_eq!(
        b.get(&stack.url("/api/other/x"))
            .await
            .expect("r")
            .status
            .as_u16(),
        200
    );
    assert_eq!(
        stack.upstream.last().expect("req").path_and_query,
        "/other/x"
    );
    // Segment-aware prefixes: /api/ordersX is /api + /ordersX, never /api/orders + X.
    b.get(&stack.url("/api/ordersX")).await.expect("r");
    assert_eq!(
        stack.upstream.last().expect("req").path_and_query,
        "/ordersX"
    );
    // No route: 404 problem.
    let nf = b.get(&stack.url("/nothing/here")).await.expect("r");
    assert_eq!(nf.status.as_u16(), 404);
    assert_eq!(nf.header("content-type"), Some("application/problem+json"));

    stack.upstream.clear();
    for target in [
        "/api/orders/../admin",
        "/api/orders/%2e%2e/admin",
        "/api/orders/%2E%2E/admin",
        "/api/orders/.%2e/admin",
        "/api/orders/%2fadmin",
        "/api/orders%2f..%2fadmin",
        "/api/orders/..%5cadmin",
        "/api/orders/..\\admin",
        "/api/orders/%252e%252e/admin",
        "/api/orders/./x",
        "/api/orders/%00",
    ] {
        let status = raw_status(&stack.base, target, &cookie).await;
        assert_eq!(status, 400, "{target}");
    }
    assert_eq!(
        stack.upstream.count(),
        0,
        "no escape attempt reached an upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_and_limits() {
    let stack = Stack::start_with(Options {
        max_request_body: "1KiB",
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    stack.login(&b).await;
    let csrf = stack.csrf(&b).await;

    let slow = b.get(&stack.url("/api/orders/slow")).await.expect("slow");
    assert_eq!(
        slow.status.as_u16(),
        504,
        "route timeout is 2s, upstream sleeps 5s"
    );
    assert_eq!(
        slow.header("content-type"),
        Some("application/problem+json")
    );

    let dead = b.get(&stack.url("/dead/x")).await.expect("dead");
    assert_eq!(dead.status.as_u16(), 502);
    assert_eq!(
        dead.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        !dead.text().contains("127.0.0.1:9"),
        "no upstream internals in the error"
    );

    let before = stack.upstream.count();
    let big = b
        .request(
            Method::POST,
            &stack.url("/api/orders/echo-body"),
            &[("x-csrf-token", &csrf)],
            vec![b'x'; 4096],
        )
        .await
        .expect("big");
    assert_eq!(big.status.as_u16(), 413);
    assert_eq!(
        stack.upstream.count(),
        before,
        "a declared oversized body is refused before the upstream"
    );

    let small = b
        .request(
            Method::POST,
            &stack.url("/api/orders/echo-body"),
            &[("x-csrf-token", &csrf)],
            vec![b'x'; 512],
        )
        .await
        .expect("small");
    assert_eq!(small.status.as_u16(), 200);
    assert_eq!(small.body.len(), 512, "body streamed through both ways");

    // A large response streams back intact.
    let large = b
        .get(&stack.url("/api/orders/big"))
        .await
        .expect("big response");
    assert_eq!(large.status.as_u16(), 200);
    assert_eq!(large.body.len(), 1 << 20);

    // Upstream status codes pass through; upstream cookies do not.
    let teapot = b
        .get(&stack.url("/api/orders/status/418"))
        .await
        .expect("418");
    assert_eq!(teapot.status.as_u16(), 418);
    assert_eq!(teapot.header("x-upstream"), Some("yes"));
    for never in [
        "set-cookie",
        "service-worker-allowed",
        "clear-site-data",
        "access-control-allow-origin",
        "access-control-allow-credentials",
    ] {
        assert!(teapot.header(never).is_none(), "{never} passed through");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_session() {
    let stack = Stack::start().await;
    let b = Browser::new();
    stack.login(&b).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let b = b.clone();
        let url = stack.url(&format!("/api/orders/{i}"));
        tasks.push(tokio::spawn(async move {
            b.get(&url).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request"), 200);
    }
    assert_eq!(stack.upstream.count(), 50);
    assert_eq!(
        stack.idp.stats().await.expect("stats").refresh_grants(),
        0,
        "a fresh token needs no refresh"
    );
}
