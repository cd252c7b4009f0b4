//! API composition (see `docs/api-composition.md`): aggregated endpoints ([`aggregate`]),
//! per-client field selection ([`trim`]), the per-route policy ([`policy`]) and the part URL
//! templates ([`placeholders`]).

pub mod aggregate;
pub mod placeholders;
pub mod policy;
pub mod trim;

use axum::{Router, body::Body, response::Response, routing::any};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;

use crate::{
    AppState,
    config::{ComposeConfig, PROFILE_HEADER, ProfileConfig, RouteConfig},
    http::problem::ApiError,
    session::Session,
};

/// The aggregates as routes of the main router (inside every middleware layer).
pub fn router(config: &ComposeConfig) -> Router<AppState> {
    config
        .aggregates
        .iter()
        .enumerate()
        .fold(Router::new(), |r, (i, a)| {
            r.route(
                &a.path,
                any(
                    move |state: axum::extract::State<AppState>,
                          current: axum::Extension<crate::session::layer::CurrentSession>,
                          req: axum::extract::Request| {
                        aggregate::serve(state, current, i, req)
                    },
                ),
            )
        })
}

/// The client profile of a request: the fixed one (route or aggregate), else the one the
/// `X-Client-Profile` header names, which must be configured (400 otherwise; one header only).
/// With profiles configured the header is checked everywhere, not only where a selection
/// exists, so a client bug shows at once.
pub fn choose_profile<'a>(
    config: &'a ComposeConfig,
    fixed: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<&'a ProfileConfig>, ApiError> {
    if let Some(name) = fixed {
        return Ok(config.profile(name));
    }
    if config.profiles.is_empty() {
        // No profiles at all: the header means nothing here.
        return Ok(None);
    }
    let mut values = headers.get_all(PROFILE_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|name| config.profile(name))
            .map(Some)
            .ok_or(ApiError::BadRequest("unknown client profile")),
        (Some(_), Some(_)) => Err(ApiError::BadRequest("unknown client profile")),
    }
}

/// What the proxy must do for a route beyond forwarding, decided before any upstream call.
#[derive(Debug, Default)]
pub struct Plan {
    /// The field selection for this response and the buffering bound.
    trim: Option<(trim::Selection, usize)>,
    /// The response depends on `X-Client-Profile`.
    vary: bool,
}

/// Route policy and client profile, in this order: method (405), session unless public (401),
/// claims and scopes (403), profile (400). `Err` is the finished answer.
pub fn gate(
    state: &AppState,
    route: &RouteConfig,
    method: &http::Method,
    headers: &HeaderMap,
    session: Option<&Session>,
) -> Result<Plan, policy::Refusal> {
    policy::check_method(&route.policy, method)?;
    if !route.policy.public {
        let s = session.ok_or(ApiError::Unauthenticated)?;
        policy::check_access(&route.policy, &s.record)?;
    }
    let compose = &state.config.compose;
    let vary = route.policy.profile.is_none() && compose.trims_route(&route.prefix);
    let trim = choose_profile(compose, route.policy.profile.as_deref(), headers)?.and_then(|p| {
        p.routes
            .iter()
            .find(|(r, _)| *r == route.prefix)
            .map(|(_, s)| (s.clone(), p.max_body))
    });
    // A HEAD answer has no body to trim (its headers pass as they are).
    let trim = trim.filter(|_| *method != http::Method::HEAD);
    Ok(Plan { trim, vary })
}

impl Plan {
    /// Request headers for a trimmed route: no `Accept-Encoding`, so the upstream answers in
    /// identity encoding and the JSON can be read.
    pub fn prepare_request(&self, headers: &mut HeaderMap) {
        if self.trim.is_some() {
            headers.remove(header::ACCEPT_ENCODING);
        }
    }

    /// The response for the browser. Trimmed: 2xx `application/json` (or `+json`) bodies without
    /// a content coding, buffered up to the profile's `max_body` within `timeout`; anything else
    /// passes through untouched. Oversized or invalid JSON is 502, a slow body 504.
    pub async fn finish<B>(
        self,
        mut parts: http::response::Parts,
        body: B,
        timeout: std::time::Duration,
    ) -> Result<Response, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if self.vary {
            parts
                .headers
                .append(header::VARY, HeaderValue::from_static("X-Client-Profile"));
        }
        let Some((selection, max)) = self.trim.filter(|_| trimmable(&parts)) else {
            return Ok(Response::from_parts(parts, Body::new(body)));
        };
        let bytes = read_bounded(body, max, timeout).await?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            tracing::warn!("trimmed route: upstream body is not valid JSON");
            ApiError::BadGateway
        })?;
        let out = serde_json::to_vec(&selection.apply(&doc)).map_err(|_| ApiError::Internal)?;
        for h in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::ETAG,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::LAST_MODIFIED,
        ] {
            parts.headers.remove(h);
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(Response::from_parts(parts, Body::from(out)))
    }
}

/// `application/json` or `application/*+json`.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// 2xx with a body that is a whole JSON document (not 204/205, nor a 206 range).
fn trimmable(parts: &http::response::Parts) -> bool {
    parts.status.is_success()
        && !matches!(parts.status.as_u16(), 204..=206)
        && is_json(&parts.headers)
        && parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Reads a whole body, at most `max` bytes, within `timeout`.
pub async fn read_bounded<B>(
    body: B,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::GatewayTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => {
            if e.is::<http_body_util::LengthLimitError>() {
                tracing::warn!(max, "upstream body over the buffering limit");
            } else {
                tracing::warn!(error = %e, "upstream body failed");
            }
            Err(ApiError::BadGateway)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProfileConfig;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(PROFILE_HEADER, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn profiles_are_an_allowlist() {
        let none = ComposeConfig::default();
        assert!(matches!(
            choose_profile(&none, None, &headers(&["x"])),
            Ok(None)
        ));
        let cfg = ComposeConfig {
            aggregates: Vec::new(),
            profiles: vec![ProfileConfig {
                name: "mobile".into(),
                max_body: 1,
                routes: Vec::new(),
                parts: Vec::new(),
            }],
        };
        let name =
            |r: Result<Option<&ProfileConfig>, ApiError>| r.map(|p| p.map(|p| p.name.clone()));
        assert_eq!(name(choose_profile(&cfg, None, &headers(&[]))), Ok(None));
        assert_eq!(
            name(choose_profile(&cfg, None, &headers(&["mobile"]))),
            Ok(Some("mobile".into()))
        );
        assert!(choose_profile(&cfg, None, &headers(&["Mobile"])).is_err());
        assert!(choose_profile(&cfg, None, &headers(&["mobile", "mobile"])).is_err());
        assert_eq!(
            name(choose_profile(&cfg, Some("mobile"), &headers(&["nope"]))),
            Ok(Some("mobile".into()))
        );
    }

    #[test]
    fn json_media_types() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(v).expect("value"),
            );
            is_json(&h)
        };
        assert!(ct("application/json") && ct("application/json; charset=utf-8"));
        assert!(ct("application/problem+json") && ct("Application/JSON"));
        assert!(!ct("text/json") && !ct("text/html") && !ct("application/jsonp"));
    }
}
