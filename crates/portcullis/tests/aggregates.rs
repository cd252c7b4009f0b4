//! Aggregated endpoints through the real login (the testkit OpenID Provider) and real upstream
//! servers: concurrency (proved by a handshake between two upstreams, no timing), partial and
//! required failures, timeouts, non-JSON and oversized parts, placeholder injection, policy.

mod common;

use common::{
    Options, Stack,
    running::{BoundPort, write_secret},
};
use http::Method;
use portcullis::crypto::keyring::KeyRing;
use serde_json::json;
use testkit::{
    browser::Browser,
    idp::{Idp, IdpOptions},
    scripted::{Reply, ScriptedUpstream},
};

/// Two services behind their own routes and aggregates over them.
fn compose_toml(users: &ScriptedUpstream, orders: &ScriptedUpstream) -> String {
    format!(
        r#"
[[routes]]
prefix = "/svc/users"
upstream = "{users}"
timeout = "5s"

[[routes]]
prefix = "/svc/orders"
upstream = "{orders}"
timeout = "5s"

[[routes]]
prefix = "/svc/admin"
upstream = "{users}/admin"
require_claims = {{ groups = "admins" }}

[[aggregates]]
path = "/api/dashboard"
[[aggregates.parts]]
name = "profile"
path = "/svc/users/users/{{sub}}"
timeout = "5s"
[[aggregates.parts]]
name = "orders"
path = "/svc/orders/orders?user={{sub}}&limit={{query.limit}}"
timeout = "5s"

[[aggregates]]
path = "/api/partial"
[[aggregates.parts]]
name = "profile"
path = "/svc/users/users/{{sub}}"
[[aggregates.parts]]
name = "broken"
path = "/svc/orders/broken"
required = false
[[aggregates.parts]]
name = "stuck"
path = "/svc/orders/hang"
required = false
timeout = "300ms"
[[aggregates.parts]]
name = "html"
path = "/svc/orders/html"
required = false
[[aggregates.parts]]
name = "huge"
path = "/svc/orders/huge"
required = false
max_size = "1KiB"
[[aggregates.parts]]
name = "admin"
path = "/svc/admin/stats"
required = false

[[aggregates]]
path = "/api/required-fails"
[[aggregates.parts]]
name = "profile"
path = "/svc/users/users/{{sub}}"
[[aggregates.parts]]
name = "broken"
path = "/svc/orders/broken"

[[aggregates]]
path = "/api/required-times-out"
[[aggregates.parts]]
name = "stuck"
path = "/svc/orders/hang"
timeout = "300ms"

[[aggregates]]
path = "/api/users/{{id}}/card"
[[aggregates.parts]]
name = "card"
path = "/svc/users/cards/{{path.id}}?q={{query.q}}"

[[aggregates]]
path = "/home/{{id}}/card"
[[aggregates.parts]]
name = "card"
path = "/svc/users/cards/{{path.id}}"
"#,
        users = users.url(),
        orders = orders.url(),
    )
}

async fn stack(users: &ScriptedUpstream, orders: &ScriptedUpstream) -> Stack {
    Stack::start_with(Options {
        extra_toml: compose_toml(users, orders),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_are_called_concurrently_with_one_token() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start_sharing(&users).await;
    // Each answer waits for the other request to arrive: called one after the other, the first
    // part would wait for ever and hit its timeout (504), so a 200 proves both were in flight.
    users.on(
        "/users/alice",
        Reply::ok(json!({"name": "Alice"})).after_arrival_of("/orders"),
    );
    orders.on(
        "/orders",
        Reply::ok(json!([{"id": 1}, {"id": 2}])).after_arrival_of("/users/alice"),
    );
    let s = stack(&users, &orders).await;
    let b = Browser::new();
    let cookie = s.login(&b).await;
    s.idp.reset_stats().await.expect("reset");

    let r = b
        .get_with(
            &s.url("/api/dashboard?limit=5"),
            &[
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("tracestate", "vendor=1"),
            ],
        )
        .await
        .expect("dashboard");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json().expect("json"),
        json!({"profile": {"name": "Alice"}, "orders": [{"id": 1}, {"id": 2}]})
    );
    let record = s.session_record(&cookie).await.expect("session");
    let bearer = format!("Bearer {}", record.record.access_token);
    // The request's trace context (the gateway's own: an untrusted one is replaced before
    // routing) reaches every part.
    let trace = users.requests()[0]
        .header("traceparent")
        .expect("traceparent on the part")
        .to_owned();
    assert_eq!(trace.len(), 55, "{trace}");
    for req in users.requests().iter().chain(orders.requests().iter()) {
        assert_eq!(req.method, "GET");
        assert_eq!(req.header("authorization"), Some(bearer.as_str()));
        assert_eq!(req.header("traceparent"), Some(trace.as_str()));
        assert!(!req.has_header("cookie"), "the session cookie never leaves");
    }
    assert_eq!(
        orders.requests_to("/orders")[0].query(),
        Some("user=alice&limit=5")
    );
    // No refresh was due: the token is used as is, and never once per part.
    assert_eq!(s.idp.stats().await.expect("stats").refresh_grants(), 0);
}

/// HEAD is GET without the content (RFC 9110 §9.3.2; §9.1: a general-purpose server MUST
/// support both), as on the route policy and the `/bff` endpoints: same status and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_answers_like_get_without_content() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    users.on("/users/alice", Reply::ok(json!({"name": "Alice"})));
    orders.on("/orders", Reply::ok(json!([])));
    let s = stack(&users, &orders).await;
    let b = Browser::new();
    let r = b
        .request(Method::HEAD, &s.url("/api/dashboard?limit=1"), &[], "")
        .await
        .expect("anon HEAD");
    assert_eq!(r.status, 401);
    s.login(&b).await;
    let get = b.get(&s.url("/api/dashboard?limit=1")).await.expect("GET");
    let head = b
        .request(Method::HEAD, &s.url("/api/dashboard?limit=1"), &[], "")
        .await
        .expect("HEAD");
    assert_eq!(head.status, 200, "{}", head.text());
    assert_eq!(head.text(), "");
    for name in ["content-type", "cache-control", "content-length"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
}

/// An aggregate may live outside `/api` and the route prefixes; it still gets the session (the
/// session layer skips the store only for the PWA's own paths).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aggregate_outside_api_gets_the_session() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start_sharing(&users).await;
    users.on("/cards/7", Reply::ok(json!({"n": 7})));
    let s = stack(&users, &orders).await;
    let anonymous = Browser::new();
    let r = anonymous.get(&s.url("/home/7/card")).await.expect("card");
    assert_eq!(r.status, 401, "{}", r.text());
    let b = Browser::new();
    s.login(&b).await;
    let r = b.get(&s.url("/home/7/card")).await.expect("card");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().expect("json"), json!({"card": {"n": 7}}));
    let r = b
        .get(&s.url("/home/7/card/x"))
        .await
        .expect("not the aggregate");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_token_is_refreshed_once_for_all_parts() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    users.on("/users/alice", Reply::ok(json!({"name": "Alice"})));
    orders.on("/orders", Reply::ok(json!([])));
    // Tokens live 60 s and are refreshed 120 s before expiry: every use needs a refresh.
    let s = Stack::start_with(Options {
        access_token_ttl: 60,
        refresh_skew: "120s",
        extra_toml: compose_toml(&users, &orders),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let cookie = s.login(&b).await;
    s.idp.reset_stats().await.expect("reset");
    let r = b
        .get(&s.url("/api/dashboard?limit=1"))
        .await
        .expect("dashboard");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.idp.stats().await.expect("stats").refresh_grants(), 1);
    let fresh = s.session_record(&cookie).await.expect("session");
    let bearer = format!("Bearer {}", fresh.record.access_token);
    assert_eq!(
        users.requests()[0].header("authorization"),
        Some(bearer.as_str())
    );
    assert_eq!(
        orders.requests()[0].header("authorization"),
        Some(bearer.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optional_failures_are_reported_without_internals() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    users.on("/users/alice", Reply::ok(json!({"name": "Alice"})));
    users.on("/admin/stats", Reply::ok(json!({"secret": 1})));
    orders.on(
        "/broken",
        Reply::Json(
            500,
            json!({"error": "db password wrong at orders.internal:5432"}),
        ),
    );
    orders.on("/hang", Reply::Hang);
    orders.on(
        "/html",
        Reply::Raw {
            status: 200,
            content_type: "text/html".into(),
            body: "<h1>hi</h1>".into(),
        },
    );
    orders.on("/huge", Reply::ok(json!({"blob": "x".repeat(4096)})));
    let s = stack(&users, &orders).await;
    let b = Browser::new();
    s.login(&b).await;

    let r = b.get(&s.url("/api/partial")).await.expect("partial");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json().expect("json");
    assert_eq!(
        body,
        json!({
            "profile": {"name": "Alice"},
            "_errors": {
                "broken": {"status": 500},
                "stuck": {"status": 504},
                "html": {"status": 502},
                "huge": {"status": 502},
                "admin": {"status": 403},
            }
        })
    );
    assert!(!r.text().contains("password") && !r.text().contains("internal"));
    // The part whose route policy refuses the user is never requested.
    assert!(users.requests_to("/admin/stats").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_required_part_fails_the_aggregate() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    users.on("/users/alice", Reply::ok(json!({"name": "Alice"})));
    orders.on("/broken", Reply::Json(503, json!({"error": "maintenance"})));
    orders.on("/hang", Reply::Hang);
    let s = stack(&users, &orders).await;
    let b = Browser::new();
    s.login(&b).await;

    let r = b.get(&s.url("/api/required-fails")).await.expect("req");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json().expect("json")["type"],
        "urn:portcullis:problem:bad-gateway"
    );
    assert!(!r.text().contains("maintenance") && !r.text().contains("Alice"));

    let r = b.get(&s.url("/api/required-times-out")).await.expect("req");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        r.json().expect("json")["type"],
        "urn:portcullis:problem:gateway-timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_aggregates_never_reach_an_upstream() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    users.on("/users/alice", Reply::ok(json!({})));
    orders.on("/orders", Reply::ok(json!([])));
    let s = stack(&users, &orders).await;
    let b = Browser::new();

    let r = b.get(&s.url("/api/dashboard?limit=1")).await.expect("anon");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    s.login(&b).await;
    let csrf = s.csrf(&b).await;
    let r = b
        .request(
            Method::POST,
            &s.url("/api/dashboard?limit=1"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("post");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    // `{query.limit}` has no value: 400 before any part starts.
    let r = b.get(&s.url("/api/dashboard")).await.expect("no limit");
    assert_eq!(r.status, 400);
    let r = b
        .get(&s.url("/api/dashboard?limit=1&limit=2"))
        .await
        .expect("twice");
    assert_eq!(r.status, 400);
    assert_eq!(users.count() + orders.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_and_query_values_cannot_inject() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    let s = stack(&users, &orders).await;
    let b = Browser::new();
    s.login(&b).await;
    // Encoded slashes and dots never get this far (request hygiene, before routing).
    let r = b
        .get(&s.url("/api/users/..%2F..%2Fadmin/card?q=1"))
        .await
        .expect("card");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(users.count(), 0);
    // `?`, `=`, `&` and `#` in a path segment or a query value are re-encoded: one segment,
    // one parameter.
    users.on("/cards/x%3Fy%3D1%26z", Reply::ok(json!({"card": 1})));
    let r = b
        .get(&s.url("/api/users/x%3Fy%3D1%26z/card?q=x%26admin%3D1%23frag"))
        .await
        .expect("card");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().expect("json"), json!({"card": {"card": 1}}));
    let seen = users.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path_and_query,
        "/cards/x%3Fy%3D1%26z?q=x%26admin%3D1%23frag"
    );
}

/// A user whose `sub` is hostile: `{sub}` must stay one path segment and one query value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_subject_cannot_inject() {
    let users = ScriptedUpstream::start().await;
    let orders = ScriptedUpstream::start().await;
    let sub = "eve/../../admin?x=1&limit=999";
    let bound = BoundPort::bind().await;
    let mut opts = IdpOptions::new(format!("{}/bff/callback", bound.base));
    opts.username = sub.to_owned();
    let idp = Idp::start(opts).await.expect("provider");
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", idp.client_secret());
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"

[session]
keys_file = "{keys}"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_file = "{secret}"
{compose}
"#,
        port = bound.port,
        base = bound.base,
        issuer = idp.issuer(),
        client_id = idp.client_id(),
        compose = compose_toml(&users, &orders),
    );
    let gw = bound.serve(&toml).await;
    let b = Browser::new();
    let outcome = b
        .login_via_form(
            &format!("{}/bff/login?returnTo=/", gw.base),
            idp.username(),
            idp.password(),
        )
        .await
        .expect("login");
    assert_eq!(outcome.callback_response.status, 302);
    users.on(
        "/users/eve%2F%2E%2E%2F%2E%2E%2Fadmin%3Fx%3D1%26limit%3D999",
        Reply::ok(json!({"who": "eve"})),
    );
    orders.on("/orders", Reply::ok(json!([])));

    let r = b
        .get(&format!("{}/api/dashboard?limit=2", gw.base))
        .await
        .expect("dashboard");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().expect("json")["profile"], json!({"who": "eve"}));
    assert_eq!(users.requests().len(), 1);
    assert_eq!(
        orders.requests_to("/orders")[0].query(),
        Some("user=eve%2F%2E%2E%2F%2E%2E%2Fadmin%3Fx%3D1%26limit%3D999&limit=2")
    );
    gw.stop().await;
    idp.stop().await.expect("stop provider");
}
