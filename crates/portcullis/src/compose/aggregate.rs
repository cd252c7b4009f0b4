//! Aggregated endpoints: one `GET` (or `HEAD`) from the browser, several concurrent `GET`s to
//! routes of the route table, one JSON object back:
//! `{ "<part>": <body>, …, "_errors": {"<part>": {"status": N}} }`.
//!
//! Every part goes through the proxy's client and URL mapping under its route (allowlist,
//! header rules, token relay). The access token is obtained (and refreshed if needed) once per
//! aggregate, before the parts start. A part fails on a timeout (504), a transport error (502),
//! a non-2xx answer (its status), a non-JSON or oversized body (502), or its route's policy
//! (403). A failed optional part is listed in `_errors`; a failed required part fails the whole
//! answer with 502 (504 when it timed out). Upstream details only go to the log.

use std::time::Duration;

use axum::{
    Extension,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{
    choose_profile, is_json,
    placeholders::{Missing, Values, Var},
    policy::{self, Refusal},
    read_bounded,
};
use crate::{
    AppState,
    config::{AggregateConfig, PartConfig, RouteConfig},
    http::{client_ip, problem::ApiError},
    proxy,
    session::layer::CurrentSession,
};

/// Headers of the incoming request passed on to every part (W3C trace context).
const PROPAGATED: [&str; 2] = ["traceparent", "tracestate"];

pub async fn serve(
    State(state): State<AppState>,
    Extension(current): Extension<CurrentSession>,
    index: usize,
    req: Request,
) -> Response {
    match run(&state, current, index, req).await {
        Ok(r) => r,
        Err(refused) => refused.into_response(),
    }
}

/// Why a part has no body: the `status` reported in `_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failed(StatusCode);

async fn run(
    state: &AppState,
    current: CurrentSession,
    index: usize,
    req: Request,
) -> Result<Response, Refusal> {
    let agg = &state.config.compose.aggregates[index];
    // HEAD is GET without the content (RFC 9110 §9.3.2): the parts are fetched all the same, so
    // the headers match, and the router drops the body.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(policy::method_not_allowed(&[Method::GET]));
    }
    let session = current.0.ok_or_else(|| err(ApiError::Unauthenticated))?;
    let compose = &state.config.compose;
    let profile = choose_profile(compose, agg.profile.as_deref(), req.headers()).map_err(err)?;
    let path = path_params(&agg.path, req.uri().path()).map_err(err)?;
    let query = query_params(req.uri().query()).map_err(err)?;
    let mut claims = session.record.claims.clone();
    claims.extend(session.record.user.clone());
    let values = Values {
        sub: &session.record.sub,
        claims: &claims,
        path: &path,
        query: &query,
    };
    // Everything is decided before the first upstream call: a refused aggregate costs nothing.
    let mut planned = Vec::with_capacity(agg.parts.len());
    for part in &agg.parts {
        let route = state
            .proxy
            .route_config(&part.route)
            .ok_or_else(|| err(ApiError::Internal))?;
        let target = part.template.render(&values).map_err(|Missing(v)| {
            tracing::info!(aggregate = %agg.path, part = %part.name, placeholder = ?v, "aggregate placeholder has no value");
            err(match v {
                Var::Path(_) | Var::Query(_) => ApiError::BadRequest("missing or empty parameter"),
                Var::Sub | Var::Claim(_) => ApiError::Forbidden,
            })
        })?;
        let allowed = policy::allows(&route.policy, &Method::GET)
            && (route.policy.public
                || policy::check_access(&route.policy, &session.record).is_ok());
        planned.push((part, route, target, allowed));
    }
    let token = if planned.iter().any(|(_, r, _, ok)| *ok && !r.policy.public) {
        crate::proxy::access_token(state, req.headers(), client_ip::peer_addr(&req), &session)
            .await
            .map_err(err)?
    } else {
        String::new()
    };
    let headers = part_headers(state, &req, &token).map_err(err)?;
    let calls = planned.iter().map(|(part, route, target, allowed)| {
        let headers = &headers;
        async move {
            if !*allowed {
                return Err(Failed(StatusCode::FORBIDDEN));
            }
            let mut h = headers.clone();
            if route.policy.public {
                h.remove(header::AUTHORIZATION);
            }
            fetch(state, agg, part, route, target, h).await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    assemble(agg, profile, results)
        .map(|body| respond(body, agg.profile.is_none() && !compose.profiles.is_empty()))
        .map_err(Refusal::Error)
}

fn err(e: ApiError) -> Refusal {
    Refusal::Error(e)
}

/// The bodies in one object; `Err` when a required part failed or the total is too large.
fn assemble(
    agg: &AggregateConfig,
    profile: Option<&crate::config::ProfileConfig>,
    results: Vec<Result<(Value, usize), Failed>>,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Map::new();
    let mut errors = Map::new();
    let mut total = 0usize;
    for (part, result) in agg.parts.iter().zip(results) {
        match result {
            Ok((body, size)) => {
                total = total.saturating_add(size);
                let selection = profile.and_then(|p| {
                    p.parts
                        .iter()
                        .find(|(a, n, _)| *a == agg.path && *n == part.name)
                        .map(|(_, _, s)| s)
                });
                let body = match selection {
                    Some(s) => s.apply(&body),
                    None => body,
                };
                out.insert(part.name.clone(), body);
            }
            Err(Failed(status)) if part.required => {
                tracing::warn!(aggregate = %agg.path, part = %part.name, status = status.as_u16(), "required aggregate part failed");
                return Err(if status == StatusCode::GATEWAY_TIMEOUT {
                    ApiError::GatewayTimeout
                } else {
                    ApiError::BadGateway
                });
            }
            Err(Failed(status)) => {
                errors.insert(part.name.clone(), json!({ "status": status.as_u16() }));
            }
        }
    }
    if total > agg.max_total {
        tracing::warn!(aggregate = %agg.path, total, max = agg.max_total, "aggregate over its total size cap");
        return Err(ApiError::BadGateway);
    }
    if !errors.is_empty() {
        out.insert("_errors".into(), Value::Object(errors));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|_| ApiError::Internal)
}

fn respond(body: Vec<u8>, vary: bool) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("X-Client-Profile"));
    }
    resp
}

/// One part: the request, the status and type checks and the bounded body, all within the
/// part's timeout.
async fn fetch(
    state: &AppState,
    agg: &AggregateConfig,
    part: &PartConfig,
    route: &RouteConfig,
    target: &str,
    headers: HeaderMap,
) -> Result<(Value, usize), Failed> {
    let work = async {
        let resp = proxy::get_part(state, &route.prefix, target, headers)
            .await
            .map_err(|e| Failed(e.status()))?;
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            tracing::info!(aggregate = %agg.path, part = %part.name, status = parts.status.as_u16(), "aggregate part answered with an error");
            return Err(Failed(parts.status));
        }
        if !is_json(&parts.headers) || parts.headers.contains_key(header::CONTENT_ENCODING) {
            tracing::warn!(aggregate = %agg.path, part = %part.name, "aggregate part is not (identity-encoded) JSON");
            return Err(Failed(StatusCode::BAD_GATEWAY));
        }
        // The part timeout bounds the whole exchange; this inner one never fires first.
        let bytes = read_bounded(body, part.max_size, part.timeout + Duration::from_secs(1))
            .await
            .map_err(|e| Failed(e.status()))?;
        let value = serde_json::from_slice::<Value>(&bytes).map_err(|_| {
            tracing::warn!(aggregate = %agg.path, part = %part.name, "aggregate part body is not valid JSON");
            Failed(StatusCode::BAD_GATEWAY)
        })?;
        Ok((value, bytes.len()))
    };
    match tokio::time::timeout(part.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(aggregate = %agg.path, part = %part.name, timeout = ?part.timeout, "aggregate part timed out");
            state.metrics.upstream_error(&part.route, "timeout");
            Err(Failed(StatusCode::GATEWAY_TIMEOUT))
        }
    }
}

/// The headers every part request carries: JSON accepted, trace context of the incoming
/// request, then the proxy's own rules (bearer token, `X-Forwarded-*`).
fn part_headers(state: &AppState, req: &Request, token: &str) -> Result<HeaderMap, ApiError> {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    for name in PROPAGATED {
        if let Some(v) = req.headers().get(name) {
            h.insert(name, v.clone());
        }
    }
    let peer = client_ip::peer_addr(req);
    let prior = proxy::forwarded_chain(state, peer, req.headers());
    proxy::headers::upstream_request(
        &mut h,
        token,
        peer,
        prior,
        &state.config.server.public_origin,
    )
    .map_err(|_| ApiError::Internal)?;
    Ok(h)
}

/// `{name}` segments of `pattern` taken from `path`, percent-decoded (the router has already
/// matched the shapes).
fn path_params(pattern: &str, path: &str) -> Result<Vec<(String, String)>, ApiError> {
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(p, seg)| {
            let name = p.strip_prefix('{')?.strip_suffix('}')?;
            Some(
                percent_encoding::percent_decode_str(seg)
                    .decode_utf8()
                    .map(|v| (name.to_owned(), v.into_owned()))
                    .map_err(|_| ApiError::BadRequest("invalid path parameter")),
            )
        })
        .collect()
}

/// The incoming query; a parameter given twice is refused (which one would be meant?).
fn query_params(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if out.iter().any(|(o, _)| *o == k) {
            return Err(ApiError::BadRequest("duplicated parameter"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_decoded() {
        assert_eq!(
            path_params("/api/u/{id}/d", "/api/u/a%2Fb%20c/d").expect("ok"),
            vec![("id".to_owned(), "a/b c".to_owned())]
        );
        assert!(path_params("/api/u/{id}", "/api/u/%FF").is_err());
    }

    #[test]
    fn duplicated_query_parameters_are_refused() {
        assert_eq!(
            query_params(Some("a=1&b=x%26y")).expect("ok"),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x&y".to_owned())
            ]
        );
        assert!(query_params(Some("a=1&a=2")).is_err());
    }
}
