//! Request hygiene, before any routing: paths that could escape a route prefix or be read
//! differently by an upstream, and method-override tricks, are refused with 400.

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::problem::ApiError;

/// Headers some frameworks use to turn a POST into another method. Never honoured.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

pub async fn reject_unsafe_requests(req: Request, next: Next) -> Response {
    if let Err(why) = check_path(req.uri().path()) {
        tracing::info!(reason = why, "request path refused");
        return ApiError::BadRequest("path not allowed").into_response();
    }
    if METHOD_OVERRIDE_HEADERS
        .iter()
        .any(|h| req.headers().contains_key(*h))
    {
        tracing::info!("method-override header refused");
        return ApiError::BadRequest("method override not allowed").into_response();
    }
    if let Some(q) = req.uri().query()
        && url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("_method"))
    {
        tracing::info!("method-override parameter refused");
        return ApiError::BadRequest("method override not allowed").into_response();
    }
    next.run(req).await
}

/// The raw (still percent-encoded) path must have no dot segments, no encoded dots, slashes,
/// backslashes or NULs (single or double encoded), and no raw backslash.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("not absolute");
    }
    if path.contains('\\') {
        return Err("backslash");
    }
    let lower = path.to_ascii_lowercase();
    for bad in [
        "%2e", "%2f", "%5c", "%00", "%252e", "%252f", "%255c", "%2500",
    ] {
        if lower.contains(bad) {
            return Err("encoded dot, slash, backslash or NUL");
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("dot segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn escapes_are_refused() {
        for p in [
            "/api/orders/../admin",
            "/api/orders/./x",
            "/api/orders/..",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E/admin",
            "/api/orders/.%2e/admin",
            "/api/orders/%2fadmin",
            "/api/orders%2F..%2Fadmin",
            "/api/orders/..%5cadmin",
            "/api/orders/..\\admin",
            "/api/orders/%252e%252e/admin",
            "/api/orders/%00",
            "relative",
        ] {
            assert!(check_path(p).is_err(), "{p} must be refused");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/",
            "/api/orders",
            "/api/orders/42",
            "/api/orders/a.b/c..d",
            "/api/x%20y",
            "/api/orders//x",
        ] {
            assert!(check_path(p).is_ok(), "{p} must pass");
        }
    }
}
