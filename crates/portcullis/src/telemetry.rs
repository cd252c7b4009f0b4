//! Logging setup and the per-request span. Only method, path (never the query: the callback's
//! carries the code and state), status, a request id and the W3C trace id are recorded; no
//! header, cookie or token.

use std::convert::Infallible;

use axum::{extract::Request, response::Response};
use http::HeaderValue;
use tower::Service;
use tracing::Instrument;

use crate::{
    AppState,
    config::LogFormat,
    http::{
        client_ip,
        trace_context::{self, TRACEPARENT, TRACESTATE, TraceContext},
        wrap::{Next, Wrap},
    },
};

pub const REQUEST_ID: &str = "x-request-id";

/// Installs the global subscriber (`RUST_LOG` filter, default `info`), with the OTLP export
/// layer when `[tracing]` configures one (see [`crate::otlp`]).
pub fn init(format: LogFormat, otlp: Option<opentelemetry_sdk::trace::SdkTracer>) {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let otlp = otlp.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp)
        .with(filter)
        .try_init();
}

/// A fresh request id (client-supplied ids are not trusted into our logs), the request's trace
/// context (see [`trace_context`]), a span around the request carrying both, and the id echoed
/// as `X-Request-Id` so support can find the log lines.
///
/// The request's `traceparent` is replaced by the gateway's own, so the proxy (which passes
/// request headers through) hands upstreams the gateway's span as their parent; the context is
/// also task-local for the calls to the OpenID Provider.
///
/// A [`Wrap`] step (see [`crate::http::wrap`]).
#[derive(Debug, Clone)]
pub struct RequestSpan(pub AppState);

impl Wrap for RequestSpan {
    async fn wrap<S>(self, mut req: Request, next: Next<S>) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let state = self.0;
        let id = crate::crypto::random::identifier::<12>();
        let trusted = client_ip::peer_addr(&req).is_some_and(|p| {
            state
                .config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&p))
        });
        let incoming = trusted
            .then(|| req.headers().get(TRACEPARENT))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        if incoming.is_none() {
            // Not continued: neither the caller's trace id nor its vendor state goes further.
            req.headers_mut().remove(TRACESTATE);
        }
        req.headers_mut().remove(TRACEPARENT);
        let span = tracing::info_span!(
            "request",
            id = %id,
            trace_id = tracing::field::Empty,
            method = %req.method(),
            path = %req.uri().path()
        );
        // With OTLP export the exported span's ids are the ones propagated; otherwise our own.
        let ctx = crate::otlp::bind_request_span(&span, incoming).or_else(|| match incoming {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        });
        if let Some(c) = ctx {
            span.record("trace_id", c.trace_id_hex());
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            req.headers_mut().insert(REQUEST_ID, v);
        }
        if let Some(c) = ctx {
            req.headers_mut().insert(TRACEPARENT, c.header_value());
            req.extensions_mut().insert(c);
        }
        let run = async move {
            let mut resp = next.run(req).await;
            tracing::debug!(status = resp.status().as_u16(), "response");
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert(REQUEST_ID, v);
            }
            resp
        }
        .instrument(span);
        match ctx {
            Some(c) => trace_context::scope(c, run).await,
            None => run.await,
        }
    }
}
