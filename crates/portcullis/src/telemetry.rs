//! Logging setup and the per-request span. Only method, path (never the query: the callback's
//! carries the code and state), status and a request id are recorded; no header, cookie or token.

use axum::{extract::Request, middleware::Next, response::Response};
use http::HeaderValue;
use tracing::Instrument;

use crate::config::LogFormat;

pub const REQUEST_ID: &str = "x-request-id";

/// Installs the global subscriber (`RUST_LOG` filter, default `info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A fresh request id (client-supplied ids are not trusted into our logs), a span around the
/// request, and the id echoed as `X-Request-Id` so support can find the log lines.
pub async fn request_span(mut req: Request, next: Next) -> Response {
    let id = crate::crypto::random::token::<12>().unwrap_or_else(|_| "-".into());
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    async move {
        let mut resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "response");
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        resp
    }
    .instrument(span)
    .await
}
