//! Hardening headers on every response the gateway produces, errors and proxied ones included.

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderName, HeaderValue};

/// The fixed set, computed once at start-up.
#[derive(Debug, Clone)]
pub struct SecurityHeaders(Vec<(HeaderName, HeaderValue)>);

impl SecurityHeaders {
    pub fn new(hsts: bool) -> Self {
        let mut v = vec![
            (
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ];
        if hsts {
            v.push((
                HeaderName::from_static("strict-transport-security"),
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            ));
        }
        SecurityHeaders(v)
    }
}

pub async fn apply(
    axum::extract::State(headers): axum::extract::State<SecurityHeaders>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in &headers.0 {
        h.insert(name.clone(), value.clone());
    }
    resp
}
