//! W3C Trace Context end to end: the upstream and the real OpenID Provider receive a valid
//! `traceparent` carrying the trace id the gateway logged for the request; an incoming one is
//! continued only from a trusted proxy, and a browser's never reaches the upstream. With
//! `[tracing] otlp_endpoint`, the binary exports the request span to a real OTLP/HTTP receiver
//! with the very ids the upstream saw.

mod binary;
mod common;

use common::{Options, Stack, running::captured_logs};
use portcullis::http::trace_context::TraceContext;
use testkit::browser::{Browser, Response};

/// The trace id logged in the request span of the request whose id the response echoes.
fn logged_trace_id(resp: &Response) -> String {
    let id = resp
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    let needle = format!("\"id\":\"{id}\"");
    let logs = captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&needle) && l.contains("\"trace_id\""))
        .unwrap_or_else(|| panic!("no log line with request id {id}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("json log line");
    let trace_id = v["span"]["trace_id"]
        .as_str()
        .or_else(|| v["spans"][0]["trace_id"].as_str())
        .expect("trace_id in the request span");
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    trace_id.to_owned()
}

fn upstream_traceparent(stack: &Stack) -> TraceContext {
    let last = stack.upstream.last().expect("upstream got the request");
    assert_eq!(
        last.header_all("traceparent").len(),
        1,
        "exactly one traceparent: {:?}",
        last.headers
    );
    TraceContext::parse(last.header("traceparent").expect("traceparent"))
        .expect("a valid traceparent")
}

const FOREIGN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_and_provider_see_the_requests_trace() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let outcome = browser
        .login_via_form(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login");
    assert_eq!(outcome.callback_response.status.as_u16(), 302);

    // The code exchange at the provider's token endpoint ran inside the callback request.
    let callback_trace = logged_trace_id(&outcome.callback_response);
    let stats = stack.idp.stats().await.expect("stats");
    let token_calls: Vec<TraceContext> = stats
        .traceparents
        .iter()
        .filter(|t| t.path.ends_with("/token"))
        .map(|t| TraceContext::parse(&t.traceparent).expect("valid traceparent at the IdP"))
        .collect();
    assert!(
        token_calls
            .iter()
            .any(|t| t.trace_id_hex() == callback_trace),
        "token call with trace {callback_trace}: {:?}",
        stats.traceparents
    );
    // Discovery and JWKS (background work, before any request) carry a trace context too.
    assert!(
        stats
            .traceparents
            .iter()
            .any(|t| t.path.contains("openid-configuration")),
        "{:?}",
        stats.traceparents
    );

    // A proxied request: the upstream's parent is the gateway's span in the logged trace.
    let r = browser.get(&stack.url("/api/orders/1")).await.expect("get");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let seen = upstream_traceparent(&stack);
    assert_eq!(seen.trace_id_hex(), logged_trace_id(&r));
    assert_eq!(seen.flags & 1, 1, "sampled");

    // From the browser (not a trusted proxy), a traceparent and tracestate are not continued.
    let r = browser
        .get_with(
            &stack.url("/api/orders/2"),
            &[("traceparent", FOREIGN), ("tracestate", "vendor=secret")],
        )
        .await
        .expect("get");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let seen = upstream_traceparent(&stack);
    assert_ne!(seen.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(seen.trace_id_hex(), logged_trace_id(&r));
    let last = stack.upstream.last().expect("request");
    assert!(!last.has_header("tracestate"), "{:?}", last.headers);
    // Nor does a malformed one break anything.
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    ] {
        let r = browser
            .get_with(&stack.url("/api/orders/3"), &[("traceparent", bad)])
            .await
            .expect("get");
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        upstream_traceparent(&stack);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_trace_is_continued() {
    let stack = Stack::start_with(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32", "::1/128"]"#.into(),
        ..Options::default()
    })
    .await;
    let browser = Browser::new();
    stack.login(&browser).await;
    let r = browser
        .get_with(
            &stack.url("/api/orders/1"),
            &[("traceparent", FOREIGN), ("tracestate", "lb=1")],
        )
        .await
        .expect("get");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let seen = upstream_traceparent(&stack);
    assert_eq!(seen.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(logged_trace_id(&r), "0af7651916cd43dd8448eb211c80319c");
    // The upstream's parent is the gateway's span, not the proxy's.
    assert_ne!(seen.span_id_hex(), "b7ad6b7169203331");
    let last = stack.upstream.last().expect("request");
    assert_eq!(last.header("tracestate"), Some("lb=1"));

    // A malformed one from the trusted proxy starts a new trace.
    let r = browser
        .get_with(
            &stack.url("/api/orders/2"),
            &[(
                "traceparent",
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            )],
        )
        .await
        .expect("get");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let seen = upstream_traceparent(&stack);
    assert_ne!(seen.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
}

/// A minimal OTLP/HTTP receiver: records every `POST /v1/traces` body, answers an empty
/// (valid) `ExportTraceServiceResponse`.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<bytes::Bytes>>>) {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    let store = std::sync::Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let store = std::sync::Arc::clone(&store);
            async move {
                assert_eq!(
                    headers.get("content-type").and_then(|v| v.to_str().ok()),
                    Some("application/x-protobuf")
                );
                store.lock().expect("lock").push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, bodies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_carries_the_propagated_ids() {
    let setup = binary::Setup::new().await;
    let upstream = testkit::upstream::RecordingUpstream::start().await;
    let (endpoint, bodies) = otlp_receiver().await;
    let keys = setup.keys(
        "keys",
        &[&portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng")],
    );
    let extra = format!(
        "\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n\n[tracing]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"portcullis-otlp-test\"\nsampling_ratio = 1.0\n",
        upstream.url()
    );
    let gw = setup.start(&setup.toml(&keys, "", &extra)).await;
    let browser = binary::login(&gw, &setup.idp).await;
    assert_eq!(
        binary::status(&browser, &gw.url("/api/orders/1")).await,
        200
    );
    let seen = TraceContext::parse(
        upstream
            .last()
            .expect("proxied")
            .header("traceparent")
            .expect("traceparent"),
    )
    .expect("valid");
    assert_eq!(seen.flags & 1, 1, "sampled at ratio 1.0");
    // The exported span is the one the upstream names as its parent: same trace id and span id
    // (raw bytes in the protobuf body), under the configured service name.
    let exported = binary::eventually(|| async {
        bodies.lock().expect("lock").iter().any(|b| {
            contains(b, &seen.trace_id)
                && contains(b, &seen.span_id)
                && contains(b, b"portcullis-otlp-test")
        })
    })
    .await;
    assert!(
        exported,
        "no exported span with the upstream's trace and parent ids ({} bodies): {}",
        bodies.lock().expect("lock").len(),
        gw.logs()
    );
}
