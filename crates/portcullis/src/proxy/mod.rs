//! The authenticated reverse proxy for the route table: each route prefix maps to one upstream
//! base URL (an allowlist; nothing else is reachable). The route prefix is replaced by the
//! upstream base path: `/api/orders/42?x=1` with `upstream = "http://orders:7001/v1"` goes to
//! `http://orders:7001/v1/42?x=1`.

mod client;
pub mod headers;
mod pool;
mod sse;
mod websocket;

use std::sync::Arc;

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
    compose,
    config::{Config, RouteConfig, path_within},
    http::{client_ip, problem::ApiError},
    metrics::RouteName,
    server::PerWorker,
    session::layer::CurrentSession,
};

#[derive(Debug)]
struct Route {
    cfg: RouteConfig,
    /// The prefix, as a metrics label.
    name: RouteName,
    /// One connection pool per worker thread: a request borrows a connection driven by its own
    /// thread (see `server::PerWorker`).
    pool: PerWorker<Arc<pool::Pool>>,
    /// HTTP/1.1-only client for WebSocket handshakes (routes with `websocket = true`).
    ws_client: Option<client::UpstreamClient>,
}

#[derive(Debug)]
pub struct Proxy {
    /// Longest prefix first, so the most specific route wins.
    routes: Vec<Route>,
    /// Aggregate paths (patterns), each with its metrics label.
    aggregates: Vec<(String, RouteName)>,
    max_body: usize,
}

impl Proxy {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let workers = config.server.worker_threads;
        let mut routes = config
            .routes
            .iter()
            .map(|r| {
                let tls = client::tls_for(r)?;
                Ok(Route {
                    cfg: r.clone(),
                    name: RouteName::new(&r.prefix),
                    pool: PerWorker::try_new(workers, || {
                        let limits = pool::Limits {
                            connect_timeout: r.connect_timeout,
                            idle_timeout: r.idle_timeout,
                            max_idle: client::MAX_IDLE,
                        };
                        pool::Pool::new(&r.upstream, tls.clone(), limits).map(Arc::new)
                    })?,
                    ws_client: if r.websocket {
                        Some(client::build_http1(r, tls.clone())?)
                    } else {
                        None
                    },
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.cfg.prefix.len()));
        Ok(Proxy {
            routes,
            aggregates: config
                .compose
                .aggregates
                .iter()
                .map(|a| (a.path.clone(), RouteName::new(&a.path)))
                .collect(),
            max_body: usize::try_from(config.server.max_request_body).unwrap_or(usize::MAX),
        })
    }

    /// Whether a configured route claims `path`.
    pub fn has_route(&self, path: &str) -> bool {
        self.route_for(path).is_some()
    }

    /// The aggregate whose path matches `path`, else the route claiming it, as a metrics label.
    pub fn route_name(&self, path: &str) -> Option<&RouteName> {
        self.aggregates
            .iter()
            .find(|(pattern, _)| crate::config::path_matches(pattern, path))
            .map(|(_, name)| name)
            .or_else(|| self.route_for(path).map(|r| &r.name))
    }

    /// Whether the route claiming `path` is `public = true` (see `crate::csrf`).
    pub fn is_public(&self, path: &str) -> bool {
        self.route_for(path).is_some_and(|r| r.cfg.policy.public)
    }

    /// The route with exactly this prefix (aggregate parts name theirs at configuration time).
    pub(crate) fn route_config(&self, prefix: &str) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .map(|r| &r.cfg)
            .find(|r| r.prefix == prefix)
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
    mut req: Request,
) -> Result<Response, ApiError> {
    let proxy = &state.proxy;
    let Some(route) = proxy.route_for(req.uri().path()) else {
        // Boxed, like the other paths off the proxied hot path: a future carries the state of
        // every branch it may take, and is copied whole each time the stack boxes it.
        return Ok(Box::pin(state.pwa.serve(req)).await);
    };
    // Route policy and client profile: a refused request never reaches the upstream.
    let plan = match compose::gate(
        state,
        &route.cfg,
        req.method(),
        req.headers(),
        current.0.as_deref(),
    ) {
        Ok(plan) => plan,
        Err(refused) => return Ok(refused.into_response()),
    };
    if route.cfg.policy.public {
        if websocket::is_upgrade(req.headers()) {
            // A WebSocket is tied to a session (it is closed when the session ends).
            return Err(ApiError::BadRequest("upgrade not allowed on this route"));
        }
        return Box::pin(forward_public(state, route, req, plan)).await;
    }
    let session = current.0.ok_or(ApiError::Unauthenticated)?;
    // WebSocket upgrades: only on routes that allow them, same Origin (see websocket.rs).
    let ws = if websocket::is_upgrade(req.headers()) {
        Some(websocket::admit(
            route,
            &mut req,
            &state.config.server.public_origin.origin,
        )?)
    } else {
        None
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > proxy.max_body) {
        return Err(ApiError::PayloadTooLarge);
    }
    let token = access_token(state, req.headers(), client_ip::peer_addr(&req), &session).await?;
    let uri = upstream_uri(&route.cfg, req.uri())?;
    // X-Forwarded-For: the incoming chain is kept only when the peer is a trusted proxy; the
    // peer's own address is always appended.
    let peer = client_ip::peer_addr(&req);
    let prior_xff = forwarded_chain(state, peer, req.headers());
    let arrived = arrival(&req);
    let (mut parts, body) = req.into_parts();
    headers::upstream_request(
        &mut parts.headers,
        &token,
        peer,
        prior_xff,
        &state.config.server.public_origin,
    )
    .map_err(|_| ApiError::Internal)?;
    plan.prepare_request(&mut parts.headers);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    if let Some(hs) = ws {
        return Box::pin(websocket::connect(state, route, &session, hs, parts)).await;
    }
    let upstream_req = http::Request::from_parts(parts, Limited::new(body, proxy.max_body));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(route.cfg.timeout, route.pool.get().send(upstream_req)).await;
    record_times(state, arrived, started);
    let resp = match sent {
        Err(_) => {
            tracing::warn!(route = %route.cfg.prefix, timeout = ?route.cfg.timeout, "upstream timed out");
            state.metrics.upstream_error(&route.cfg.prefix, "timeout");
            return Err(ApiError::GatewayTimeout);
        }
        Ok(Err(e)) => return Err(classify(state, &route.cfg, &e, e.is_connect())),
        Ok(Ok(r)) => informational_is_bad(state, &route.cfg, r)?,
    };
    let (mut parts, body) = resp.into_parts();
    headers::downstream_response(&mut parts.headers);
    if sse::is_event_stream(&parts.headers) {
        let handle = state.sessions.streams().open(
            std::sync::Arc::clone(state.sessions.store()),
            session.key.clone(),
            session.record.absolute_expires_at,
            state.config.session.stream_recheck_interval,
        );
        let body = sse::until_session_ends(body, handle);
        return plan.finish(parts, body, route.cfg.timeout).await;
    }
    plan.finish(parts, body, route.cfg.timeout).await
}

/// The incoming `X-Forwarded-For` chain, kept only when the peer is a trusted proxy.
pub(crate) fn forwarded_chain(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    headers: &http::HeaderMap,
) -> Option<String> {
    peer.filter(|p| {
        state
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(p))
    })
    .and_then(|_| headers.get("x-forwarded-for"))
    .and_then(|v| v.to_str().ok())
    .map(str::to_owned)
}

/// A `public = true` route: no session needed and no token attached. The browser's cookie and
/// credentials are stripped as on every route, so the upstream gets no ambient authority.
async fn forward_public(
    state: &AppState,
    route: &Route,
    req: Request,
    plan: compose::Plan,
) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.proxy.max_body) {
        return Err(ApiError::PayloadTooLarge);
    }
    let uri = upstream_uri(&route.cfg, req.uri())?;
    let peer = client_ip::peer_addr(&req);
    let prior_xff = forwarded_chain(state, peer, req.headers());
    let arrived = arrival(&req);
    let (mut parts, body) = req.into_parts();
    headers::upstream_request(
        &mut parts.headers,
        "",
        peer,
        prior_xff,
        &state.config.server.public_origin,
    )
    .map_err(|_| ApiError::Internal)?;
    parts.headers.remove(header::AUTHORIZATION);
    plan.prepare_request(&mut parts.headers);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let upstream_req = http::Request::from_parts(parts, Limited::new(body, state.proxy.max_body));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(route.cfg.timeout, route.pool.get().send(upstream_req)).await;
    record_times(state, arrived, started);
    let resp = match sent {
        Err(_) => {
            state.metrics.upstream_error(&route.cfg.prefix, "timeout");
            return Err(ApiError::GatewayTimeout);
        }
        Ok(Err(e)) => return Err(classify(state, &route.cfg, &e, e.is_connect())),
        Ok(Ok(r)) => informational_is_bad(state, &route.cfg, r)?,
    };
    let (mut parts, body) = resp.into_parts();
    headers::downstream_response(&mut parts.headers);
    plan.finish(parts, body, route.cfg.timeout).await
}

/// A `GET` of the gateway itself (an aggregate part) to `path_and_query`, a gateway path under
/// the route with exactly this `prefix`: the proxy's pooled client and URL mapping, so the
/// route's upstream stays the only one reachable. `headers` are final; the caller sets the
/// timeout.
pub(crate) async fn get_part(
    state: &AppState,
    prefix: &str,
    path_and_query: &str,
    headers: http::HeaderMap,
) -> Result<http::Response<pool::ResponseBody>, ApiError> {
    let route = state
        .proxy
        .routes
        .iter()
        .find(|r| r.cfg.prefix == prefix)
        .ok_or(ApiError::Internal)?;
    let incoming: Uri = path_and_query
        .parse()
        .map_err(|_| ApiError::BadRequest("invalid upstream URL"))?;
    if !path_within(incoming.path(), prefix) {
        return Err(ApiError::Internal);
    }
    let mut req = http::Request::new(Limited::new(Body::empty(), 0));
    *req.uri_mut() = upstream_uri(&route.cfg, &incoming)?;
    *req.headers_mut() = headers;
    let started = std::time::Instant::now();
    let sent = route.pool.get().send(req).await;
    state.metrics.upstream(started.elapsed());
    let resp = sent.map_err(|e| classify(state, &route.cfg, &e, e.is_connect()))?;
    informational_is_bad(state, &route.cfg, resp)
}

/// The session's access token, refreshed first if it is due. A failed refresh is audited here,
/// so proxied requests, aggregates and WebSocket handshakes leave the same trail.
pub(crate) async fn access_token(
    state: &AppState,
    headers: &http::HeaderMap,
    peer: Option<std::net::IpAddr>,
    session: &crate::session::Session,
) -> Result<String, ApiError> {
    state
        .refresher
        .access_token(&state.sessions, &state.oidc, session)
        .await
        .inspect_err(|e| {
            let ctx = state.audit_context(headers, peer);
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
        })
}

/// A 1xx as the final answer to a request that asked for no upgrade (a `101` switching to a
/// protocol the client never offered, RFC 9110 §15.2.2) is the upstream's fault: 502, never
/// forwarded as a `101` without its `Upgrade` (which is hop-by-hop, so it would be stripped).
fn informational_is_bad<B>(
    state: &AppState,
    route: &RouteConfig,
    resp: http::Response<B>,
) -> Result<http::Response<B>, ApiError> {
    if resp.status().is_informational() {
        tracing::warn!(route = %route.prefix, status = resp.status().as_u16(), "upstream answered with a 1xx as the final status");
        state.metrics.upstream_error(&route.prefix, "other");
        return Err(ApiError::BadGateway);
    }
    Ok(resp)
}

/// When the request's head was read off its connection (`None` for in-process requests).
fn arrival(req: &Request) -> Option<std::time::Instant> {
    req.extensions()
        .get::<crate::http::hygiene::FromListener>()
        .map(|f| f.arrived)
}

/// The upstream's time to response headers (sent at `sent`, answered now) and the gateway's own
/// share before it: from the request's arrival to the send.
fn record_times(state: &AppState, arrived: Option<std::time::Instant>, sent: std::time::Instant) {
    state.metrics.upstream(sent.elapsed());
    if let Some(arrived) = arrived {
        state
            .metrics
            .overhead(sent.saturating_duration_since(arrived));
    }
}

/// What the browser is told when an upstream exchange failed (`connect`: no connection was made).
fn classify(
    state: &AppState,
    route: &RouteConfig,
    e: &(dyn std::error::Error + 'static),
    connect: bool,
) -> ApiError {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge;
        }
        // The browser's request body failed while it streamed to the upstream (broken chunked
        // framing, a connection cut mid-body): the client's fault, not the upstream's. Upstream
        // failures never surface as `axum::Error`, which only wraps the incoming body's errors.
        if s.is::<axum::Error>() {
            tracing::info!(route = %route.prefix, error = %e, "request body failed while forwarding");
            return ApiError::BadRequest("malformed request body");
        }
        source = s.source();
    }
    if connect {
        tracing::warn!(route = %route.prefix, error = %e, "upstream connection failed");
        state.metrics.upstream_error(&route.prefix, "connect");
    } else {
        tracing::warn!(route = %route.prefix, error = %e, "upstream request failed");
        state.metrics.upstream_error(&route.prefix, "other");
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
            idle_timeout: Duration::from_secs(1),
            websocket: false,
            ca_pem: None,
            policy: Default::default(),
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
