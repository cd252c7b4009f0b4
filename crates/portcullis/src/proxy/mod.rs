//! The authenticated reverse proxy for the route table: each route prefix maps to one upstream
//! base URL (an allowlist; nothing else is reachable). The route prefix is replaced by the
//! upstream base path: `/api/orders/42?x=1` with `upstream = "http://orders:7001/v1"` goes to
//! `http://orders:7001/v1/42?x=1`.

mod client;
pub mod headers;

use axum::{
    Extension,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{Uri, header};
use http_body_util::Limited;

use crate::{
    AppState,
    audit::AuditEvent,
    config::{Config, RouteConfig, path_within},
    http::{client_ip, problem::ApiError},
    session::layer::CurrentSession,
};

#[derive(Debug)]
struct Route {
    cfg: RouteConfig,
    client: client::UpstreamClient,
}

#[derive(Debug)]
pub struct Proxy {
    /// Longest prefix first, so the most specific route wins.
    routes: Vec<Route>,
    max_body: usize,
}

impl Proxy {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let mut routes = config
            .routes
            .iter()
            .map(|r| {
                Ok(Route {
                    cfg: r.clone(),
                    client: client::build(r.connect_timeout)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.cfg.prefix.len()));
        Ok(Proxy {
            routes,
            max_body: usize::try_from(config.server.max_request_body).unwrap_or(usize::MAX),
        })
    }

    /// Whether a configured route claims `path`.
    pub fn has_route(&self, path: &str) -> bool {
        self.route_for(path).is_some()
    }

    fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path_within(path, &r.cfg.prefix))
    }
}

/// Everything that is not `/bff/*` or a health endpoint: a configured route, else the PWA's
/// static files (see [`crate::pwa`]), else 404.
pub async fn dispatch(
    State(state): State<AppState>,
    Extension(current): Extension<CurrentSession>,
    req: Request,
) -> Response {
    match forward(&state, current, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward(
    state: &AppState,
    current: CurrentSession,
    req: Request,
) -> Result<Response, ApiError> {
    let proxy = &state.proxy;
    let Some(route) = proxy.route_for(req.uri().path()) else {
        return Ok(state.pwa.serve(req).await);
    };
    let session = current.0.ok_or(ApiError::Unauthenticated)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > proxy.max_body) {
        return Err(ApiError::PayloadTooLarge);
    }
    let token = match state
        .refresher
        .access_token(&state.sessions, &state.oidc, &session)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let ctx = state.audit_context(req.headers(), client_ip::peer_addr(&req));
            state.audit.event(AuditEvent {
                event: "refresh_failure",
                reason: Some(match e {
                    ApiError::Unauthenticated => "session_ended",
                    _ => "unavailable",
                }),
                subject: Some(&session.record.sub),
                session: Some(&session.key),
                ctx: Some(&ctx),
                ..AuditEvent::default()
            });
            return Err(e);
        }
    };
    let uri = upstream_uri(&route.cfg, req.uri())?;
    // X-Forwarded-For: the incoming chain is kept only when the peer is a trusted proxy; the
    // peer's own address is always appended.
    let peer = client_ip::peer_addr(&req);
    let prior_xff = peer
        .filter(|p| {
            state
                .config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(p))
        })
        .and_then(|_| req.headers().get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut parts, body) = req.into_parts();
    headers::upstream_request(
        &mut parts.headers,
        &token,
        peer,
        prior_xff,
        &state.config.server.public_origin,
    )
    .map_err(|_| ApiError::Internal)?;
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let upstream_req = http::Request::from_parts(parts, Limited::new(body, proxy.max_body));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(route.cfg.timeout, route.client.request(upstream_req)).await;
    state.metrics.upstream(started.elapsed());
    let resp = match sent {
        Err(_) => {
            tracing::warn!(route = %route.cfg.prefix, timeout = ?route.cfg.timeout, "upstream timed out");
            state.metrics.upstream_error("timeout");
            return Err(ApiError::GatewayTimeout);
        }
        Ok(Err(e)) => return Err(classify(state, &route.cfg, &e)),
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    headers::downstream_response(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn classify(
    state: &AppState,
    route: &RouteConfig,
    e: &hyper_util::client::legacy::Error,
) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge;
        }
        source = s.source();
    }
    if e.is_connect() {
        tracing::warn!(route = %route.prefix, error = %e, "upstream connection failed");
        state.metrics.upstream_error("connect");
    } else {
        tracing::warn!(route = %route.prefix, error = %e, "upstream request failed");
        state.metrics.upstream_error("other");
    }
    ApiError::BadGateway
}

/// Replaces the route prefix with the upstream's base path; the query passes unchanged.
fn upstream_uri(route: &RouteConfig, incoming: &Uri) -> Result<Uri, ApiError> {
    let rest = &incoming.path()[route.prefix.len()..];
    let base = route.upstream.as_str().trim_end_matches('/');
    let mut s = String::with_capacity(base.len() + rest.len() + 64);
    s.push_str(base);
    if rest.is_empty() && route.upstream.path() == "/" {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = incoming.query() {
        s.push('?');
        s.push_str(q);
    }
    s.parse()
        .map_err(|_| ApiError::BadRequest("invalid upstream URL"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn route(prefix: &str, upstream: &str) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: upstream.parse().expect("url"),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn prefix_is_replaced_by_base_path() {
        let r = route("/api/orders", "http://up:7001/v1");
        let u = |s: &str| {
            upstream_uri(&r, &s.parse().expect("uri"))
                .expect("ok")
                .to_string()
        };
        assert_eq!(u("/api/orders/42?x=1"), "http://up:7001/v1/42?x=1");
        assert_eq!(u("/api/orders"), "http://up:7001/v1");
        let root = route("/api", "http://up:7001");
        assert_eq!(
            upstream_uri(&root, &"/api".parse().expect("uri"))
                .expect("ok")
                .to_string(),
            "http://up:7001/"
        );
        assert_eq!(
            upstream_uri(&root, &"/api/ok".parse().expect("uri"))
                .expect("ok")
                .to_string(),
            "http://up:7001/ok"
        );
    }
}
