//! Per-route policy: allowed methods, public routes, required claims and scopes.
//!
//! Checked before any upstream is contacted. Refusals: 405 with `Allow` (method), 401 (no
//! session on a non-public route), 403 `urn:portcullis:problem:forbidden` (claims, scopes; the
//! missing claim or scope is logged, never told to the browser).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use serde_json::Value;

use crate::{config::RoutePolicy, http::problem::ApiError, session::SessionRecord};

/// Whether the policy allows `method` (`GET` also allows `HEAD`).
pub fn allows(policy: &RoutePolicy, method: &Method) -> bool {
    match &policy.methods {
        None => true,
        Some(ms) => ms.contains(method) || (*method == Method::HEAD && ms.contains(&Method::GET)),
    }
}

/// A request refused before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Error(ApiError),
    /// 405, with the `Allow` header value.
    Method(String),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Error(e) => e.into_response(),
            Refusal::Method(allow) => {
                let mut resp = ApiError::MethodNotAllowed.into_response();
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                resp
            }
        }
    }
}

/// 405 problem+json with the `Allow` header listing what the route accepts.
pub fn method_not_allowed(allowed: &[Method]) -> Refusal {
    let mut names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    if allowed.contains(&Method::GET) && !allowed.contains(&Method::HEAD) {
        names.push("HEAD");
    }
    Refusal::Method(names.join(", "))
}

/// The method check.
pub fn check_method(policy: &RoutePolicy, method: &Method) -> Result<(), Refusal> {
    match &policy.methods {
        Some(ms) if !allows(policy, method) => Err(method_not_allowed(ms)),
        _ => Ok(()),
    }
}

/// A claim of the session: `sub`, then the claims shown at `/bff/session`, then those kept for
/// policies and placeholders.
pub fn claim<'a>(record: &'a SessionRecord, name: &str) -> Option<std::borrow::Cow<'a, Value>> {
    if name == "sub" {
        return Some(std::borrow::Cow::Owned(Value::String(record.sub.clone())));
    }
    record
        .user
        .get(name)
        .or_else(|| record.claims.get(name))
        .map(std::borrow::Cow::Borrowed)
}

/// A claim satisfies `want` when it equals it (strings; numbers and booleans by their JSON
/// text) or, for an array claim (e.g. `groups`), when an element does.
pub fn claim_matches(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        Value::Array(items) => items
            .iter()
            .any(|v| !v.is_array() && claim_matches(v, want)),
        _ => false,
    }
}

/// Required claims and scopes. `Err(Forbidden)`, with the reason logged.
pub fn check_access(policy: &RoutePolicy, record: &SessionRecord) -> Result<(), ApiError> {
    for (name, want) in &policy.require_claims {
        let ok = claim(record, name).is_some_and(|v| claim_matches(&v, want));
        if !ok {
            tracing::info!(sub = %record.sub, claim = %name, "route policy refused: required claim missing");
            return Err(ApiError::Forbidden);
        }
    }
    for scope in &policy.require_scopes {
        if !record.scopes.iter().any(|s| s == scope) {
            tracing::info!(sub = %record.sub, scope = %scope, "route policy refused: required scope missing");
            return Err(ApiError::Forbidden);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> SessionRecord {
        let mut r: SessionRecord = serde_json::from_value(json!({
            "sub": "alice", "iss": "i", "sid": null, "user": {"email": "a@x"},
            "csrf_token": "c", "access_token": "t", "access_expires_at": null,
            "refresh_token": null, "id_token": null, "created_at": 0, "absolute_expires_at": 1
        }))
        .expect("record");
        r.claims.insert("groups".into(), json!(["staff", "admins"]));
        r.claims.insert("level".into(), json!(3));
        r.scopes = vec!["openid".into(), "orders:read".into()];
        r
    }

    fn policy(claims: &[(&str, &str)], scopes: &[&str]) -> RoutePolicy {
        RoutePolicy {
            require_claims: claims
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            require_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..RoutePolicy::default()
        }
    }

    #[test]
    fn claims_and_scopes() {
        let r = record();
        assert_eq!(
            check_access(&policy(&[("groups", "admins")], &["orders:read"]), &r),
            Ok(())
        );
        assert_eq!(
            check_access(
                &policy(&[("email", "a@x"), ("level", "3"), ("sub", "alice")], &[]),
                &r
            ),
            Ok(())
        );
        assert_eq!(
            check_access(&policy(&[("groups", "root")], &[]), &r),
            Err(ApiError::Forbidden)
        );
        assert_eq!(
            check_access(&policy(&[("team", "x")], &[]), &r),
            Err(ApiError::Forbidden)
        );
        assert_eq!(
            check_access(&policy(&[], &["orders:write"]), &r),
            Err(ApiError::Forbidden)
        );
    }

    #[test]
    fn methods() {
        let p = RoutePolicy {
            methods: Some(vec![Method::GET, Method::POST]),
            ..RoutePolicy::default()
        };
        assert!(allows(&p, &Method::GET) && allows(&p, &Method::HEAD) && allows(&p, &Method::POST));
        assert!(!allows(&p, &Method::DELETE));
        let resp = check_method(&p, &Method::DELETE)
            .expect_err("refused")
            .into_response();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "GET, POST, HEAD");
        assert!(allows(&RoutePolicy::default(), &Method::PATCH));
    }
}
