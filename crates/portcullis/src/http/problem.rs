//! RFC 9457 `application/problem+json` errors. Auth failures say as little as possible to the
//! browser; the reason goes to the log at the place the error is raised.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

/// Every error the gateway answers with. The `type` URIs are part of the HTTP contract (the
/// client SDK recognises `urn:portcullis:problem:csrf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(&'static str),
    Unauthenticated,
    Csrf,
    CrossOrigin,
    /// Authenticated, but a route policy (claims, scopes) refuses the request.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    LoginFailed,
    /// Over a rate limit (see `crate::ratelimit`); `Retry-After` says when to try again.
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// A method the gateway serves on no path (`TRACE`, `CONNECT`).
    NotImplemented(&'static str),
    BadGateway,
    GatewayTimeout,
    Unavailable,
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::Csrf | ApiError::CrossOrigin | ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::BadGateway => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug_title_detail(&self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            ApiError::BadRequest(d) => ("bad-request", "Bad request", Some(d)),
            ApiError::Unauthenticated => ("unauthenticated", "Authentication required", None),
            ApiError::Csrf => ("csrf", "Missing or invalid anti-CSRF token", None),
            ApiError::CrossOrigin => ("cross-origin", "Cross-origin request refused", None),
            ApiError::Forbidden => ("forbidden", "Forbidden", None),
            ApiError::NotFound => ("not-found", "Not found", None),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed", None),
            ApiError::PayloadTooLarge => ("payload-too-large", "Request body too large", None),
            ApiError::UnsupportedMediaType => {
                ("unsupported-media-type", "Unsupported media type", None)
            }
            ApiError::LoginFailed => ("login-failed", "Login failed", None),
            ApiError::TooManyRequests { .. } => ("rate-limited", "Too many requests", None),
            ApiError::NotImplemented(d) => ("not-implemented", "Not implemented", Some(d)),
            ApiError::BadGateway => ("bad-gateway", "Upstream unavailable", None),
            ApiError::GatewayTimeout => ("gateway-timeout", "Upstream timed out", None),
            ApiError::Unavailable => ("unavailable", "Service temporarily unavailable", None),
            ApiError::Internal => ("internal", "Internal error", None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            // delta-seconds (RFC 9110 §10.2.3); never 0, which would invite a busy loop.
            ApiError::TooManyRequests { retry_after_secs } => Some((*retry_after_secs).max(1)),
            _ => None,
        };
        let (slug, title, detail) = self.slug_title_detail();
        let mut body = serde_json::json!({
            "type": format!("urn:portcullis:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
        });
        if let Some(d) = detail {
            body["detail"] = serde_json::Value::from(d);
        }
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 requires a challenge with 401; this one names no scheme a browser would act on.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Portcullis realm=\"bff\""),
            );
        }
        resp
    }
}
