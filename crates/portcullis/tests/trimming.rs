//! Field selection per client profile through the real login and a real upstream: on a plain
//! proxied route (header-selected and fixed profiles) and on aggregate parts; unknown profiles,
//! non-JSON and oversized bodies.

mod common;

use common::{Options, Stack};
use serde_json::json;
use testkit::{
    browser::Browser,
    scripted::{Reply, ScriptedUpstream},
};

fn trim_toml(up: &ScriptedUpstream) -> String {
    format!(
        r#"
[[routes]]
prefix = "/t/orders"
upstream = "{up}/orders"

[[routes]]
prefix = "/t/fixed"
upstream = "{up}/orders"
profile = "mobile"

[[aggregates]]
path = "/api/home"
[[aggregates.parts]]
name = "orders"
path = "/t/orders/list"
[[aggregates.parts]]
name = "me"
path = "/t/orders/me"

[[profiles]]
name = "mobile"
max_body = "2KiB"
[[profiles.select]]
route = "/t/orders"
fields = ["$.id", "$.items[*].sku"]
[[profiles.select]]
route = "/t/fixed"
fields = ["$.id"]
[[profiles.select]]
aggregate = "/api/home"
part = "orders"
fields = ["$[*].id"]

[[profiles]]
name = "web"
"#,
        up = up.url()
    )
}

fn order() -> serde_json::Value {
    json!({
        "id": 42,
        "customer": {"name": "Alice", "address": "1 Rabbit Hole"},
        "items": [{"sku": "tea", "qty": 2}, {"qty": 1}, {"sku": "cake", "qty": 3}]
    })
}

async fn stack(up: &ScriptedUpstream) -> Stack {
    up.on("/orders/42", Reply::ok(order()));
    up.on(
        "/orders/list",
        Reply::ok(json!([{"id": 1, "total": 9}, {"id": 2, "total": 5}])),
    );
    up.on("/orders/me", Reply::ok(json!({"name": "Alice"})));
    up.on(
        "/orders/text",
        Reply::Raw {
            status: 200,
            content_type: "text/plain".into(),
            body: "plain text".into(),
        },
    );
    up.on(
        "/orders/big",
        Reply::ok(json!({"id": 1, "blob": "x".repeat(4096)})),
    );
    up.on(
        "/orders/bad",
        Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: "{not json".into(),
        },
    );
    up.on(
        "/orders/missing",
        Reply::Json(404, json!({"error": "no such order", "id": 7})),
    );
    Stack::start_with(Options {
        extra_toml: trim_toml(up),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_header_selects_fields_on_a_route() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let b = Browser::new();
    s.login(&b).await;

    let r = b
        .get_with(&s.url("/t/orders/42"), &[("x-client-profile", "mobile")])
        .await
        .expect("mobile");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json().expect("json"),
        json!({"id": 42, "items": [{"sku": "tea"}, {"sku": "cake"}]})
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("vary"), Some("X-Client-Profile"));
    // The upstream was asked for an identity-encoded body it can be trimmed from.
    assert!(!up.requests()[0].has_header("accept-encoding"));

    // No header, or a profile without a selection for this route: the whole body, same Vary.
    for headers in [&[][..], &[("x-client-profile", "web")][..]] {
        let r = b
            .get_with(&s.url("/t/orders/42"), headers)
            .await
            .expect("full");
        assert_eq!(r.status, 200);
        assert_eq!(r.json().expect("json"), order());
        assert_eq!(r.header("vary"), Some("X-Client-Profile"));
    }

    // Error answers and non-JSON bodies pass untouched.
    let r = b
        .get_with(
            &s.url("/t/orders/missing"),
            &[("x-client-profile", "mobile")],
        )
        .await
        .expect("404");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json().expect("json"),
        json!({"error": "no such order", "id": 7})
    );
    let r = b
        .get_with(&s.url("/t/orders/text"), &[("x-client-profile", "mobile")])
        .await
        .expect("text");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "plain text");
    // HEAD: the headers of the untrimmed answer, no body to trim.
    let r = b
        .request(
            http::Method::HEAD,
            &s.url("/t/orders/42"),
            &[("x-client-profile", "mobile")],
            "",
        )
        .await
        .expect("head");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_profiles_and_unusable_bodies_are_errors() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let b = Browser::new();
    s.login(&b).await;

    let r = b
        .get_with(&s.url("/t/orders/42"), &[("x-client-profile", "desktop")])
        .await
        .expect("unknown");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = b
        .get_with(&s.url("/api/home"), &[("x-client-profile", "Mobile")])
        .await
        .expect("unknown on aggregate");
    assert_eq!(r.status, 400, "{}", r.text());
    // Also on a route no profile selects from.
    let r = b
        .get_with(&s.url("/api/anything"), &[("x-client-profile", "desktop")])
        .await
        .expect("unknown on an untrimmed route");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(s.upstream.count(), 0);
    assert_eq!(up.count(), 0, "an unknown profile reaches no upstream");

    // Over the profile's 2 KiB buffering bound, or not JSON although it says so: 502.
    for path in ["/t/orders/big", "/t/orders/bad"] {
        let r = b
            .get_with(&s.url(path), &[("x-client-profile", "mobile")])
            .await
            .expect("unusable");
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    // Untrimmed, the same big body streams through.
    let r = b.get(&s.url("/t/orders/big")).await.expect("big");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_profiles_and_aggregate_parts_are_trimmed() {
    let up = ScriptedUpstream::start().await;
    let s = stack(&up).await;
    let b = Browser::new();
    s.login(&b).await;

    // The route's fixed profile applies whatever the header says.
    let r = b
        .get_with(&s.url("/t/fixed/42"), &[("x-client-profile", "web")])
        .await
        .expect("fixed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().expect("json"), json!({"id": 42}));
    assert!(r.header("vary").is_none());

    let r = b
        .get_with(&s.url("/api/home"), &[("x-client-profile", "mobile")])
        .await
        .expect("aggregate");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json().expect("json"),
        json!({"orders": [{"id": 1}, {"id": 2}], "me": {"name": "Alice"}})
    );
    assert_eq!(r.header("vary"), Some("X-Client-Profile"));
    let r = b.get(&s.url("/api/home")).await.expect("aggregate, full");
    assert_eq!(
        r.json().expect("json")["orders"],
        json!([{"id": 1, "total": 9}, {"id": 2, "total": 5}])
    );
}
