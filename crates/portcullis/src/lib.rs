//! Portcullis: a Backend-for-Frontend security gateway.
//!
//! The browser gets an opaque `__Host-` session cookie and an anti-CSRF token; OAuth tokens stay
//! here, sealed in a session store. Requests flow through these layers, outermost first:
//!
//! metrics → request id → security headers → CSP fallback → request hygiene → probes (`/healthz`
//! `/readyz`) → session → CSRF → router (`/bff/*` endpoints, route table → authenticated reverse
//! proxy, anything else → the PWA's static files, see [`pwa`]). Metrics ([`metrics`]) are served
//! on the admin listener; security events go to the audit log ([`audit`]).
//!
//! [`public_service`] builds the whole stack from an [`AppState`] and is what `serve` runs;
//! [`app`] is the same stack in a `Router`, so tests drive exactly that.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod bff;
pub mod cli;
pub mod compose;
pub mod config;
pub mod crypto;
pub mod csrf;
pub mod health;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod otlp;
pub mod proxy;
pub mod pwa;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod session;
pub mod store;
mod telemetry;

use std::sync::Arc;

use axum::Router;
use tower::ServiceBuilder;

use crate::{
    config::{Config, StoreConfig},
    http::{
        around::{AroundLayer, AroundService},
        security_headers::SecurityHeaders,
        wrap::{WrapLayer, WrapService},
    },
    oidc::OidcProvider,
    session::{SessionManager, refresh::Refresher},
    store::{MemoryStore, RedisStore, SessionStore},
};

/// Everything a request handler may need; one `Arc` to clone (every middleware layer and
/// extractor clones the state on every request: docs/performance.md). Fields are read through
/// `Deref` ([`AppStateInner`]).
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Debug)]
pub struct AppStateInner {
    pub config: Arc<Config>,
    pub sessions: SessionManager,
    pub oidc: Arc<OidcProvider>,
    pub refresher: Refresher,
    pub proxy: Arc<proxy::Proxy>,
    /// Brute-force protection for login, callback and handshake: in this process, or in Redis
    /// (shared by every instance) when the sessions are. `limiter.check(..)` is the one call.
    pub limiter: Arc<dyn ratelimit::RateLimiter>,
    /// The PWA's static files and Content-Security-Policy (see [`pwa`]).
    pub pwa: Arc<pwa::Pwa>,
    /// CSP / Trusted Types violations received at `/bff/csp-report`, per directive.
    pub csp_report_counts: Arc<bff::csp_report::ReportCounts>,
    /// Prometheus metrics, rendered at the admin listener's `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The security audit log (`[audit]`; a no-op when not configured).
    pub audit: audit::AuditLog,
    /// Live WebSocket/SSE streams per session (the same registry as `sessions.streams()`).
    /// `streams.close_all()` closes them all with "going away" at shutdown.
    pub streams: session::streams::Streams,
    /// Serving or draining: readiness answers 503 once shutdown starts (see [`server`]).
    pub lifecycle: Arc<health::Lifecycle>,
    csrf_exempt: Arc<[String; 4]>,
}

impl AppState {
    /// Builds the state with the store the config names. Discovery of the provider is *not*
    /// started here: call [`OidcProvider::spawn_discovery`] (as `serve` does) or `discover`.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let mut memory = None;
        let store: Arc<dyn SessionStore> = match &config.session.store {
            StoreConfig::Memory => {
                let m = Arc::new(MemoryStore::new());
                memory = Some(Arc::clone(&m));
                m
            }
            StoreConfig::File(path) => {
                Arc::new(store::FileStore::open(path, &config.session.keys)?)
            }
            StoreConfig::Redis(redis) => Arc::new(RedisStore::per_worker(
                redis.clone(),
                config.server.worker_threads,
            )?),
        };
        let state = Self::with_store(config, store)?;
        if let Some(m) = memory {
            state.metrics.watch_memory_store(m);
        }
        Ok(state)
    }

    pub fn with_store(config: Config, store: Arc<dyn SessionStore>) -> anyhow::Result<Self> {
        let metrics = Arc::new(metrics::Metrics::new());
        let store: Arc<dyn SessionStore> =
            Arc::new(metrics::MeteredStore::new(store, Arc::clone(&metrics)));
        let carried = reload::Carried {
            oidc: Arc::new(OidcProvider::new(
                config.oidc.clone(),
                config.redirect_uri(),
            )?),
            limiter: ratelimit::for_store(&config.session.store)?,
            refresher: Refresher::with_metrics(Arc::clone(&metrics)),
            csp_report_counts: Arc::default(),
            lifecycle: Arc::default(),
            streams: session::streams::Streams::default(),
            store,
            metrics,
        };
        Self::from_parts(config, carried)
    }

    /// Builds the state around live parts: at startup fresh ones, on a config reload those of the
    /// running state (the store and its sessions, rate-limit counters, metrics; see [`reload`]).
    pub fn from_parts(config: Config, carried: reload::Carried) -> anyhow::Result<Self> {
        let reload::Carried {
            store,
            oidc,
            limiter,
            refresher,
            csp_report_counts,
            metrics,
            lifecycle,
            streams,
        } = carried;
        let audit = audit::AuditLog::open(config.audit.as_ref())?;
        let sessions = SessionManager::new(
            store,
            config.session.keys.clone(),
            config.session.absolute_lifetime,
            config.session.idle_timeout,
        )
        .with_open_cache(config.session.open_cache_entries)
        .with_streams(streams.clone());
        let proxy = Arc::new(proxy::Proxy::new(&config)?);
        let pwa = Arc::new(pwa::Pwa::new(&config));
        let csrf_exempt = Arc::new([
            // The provider's browser redirect and its server-to-server call carry no CSRF token;
            // each has its own proof (state + binding cookie, signed logout token).
            format!("{}/callback", config.bff_prefix),
            format!("{}/backchannel-logout", config.bff_prefix),
            // No session exists yet; it has its own proof: JSON only, same Origin (see handshake).
            format!("{}/handshake", config.bff_prefix),
            // Browsers send violation reports without custom headers; the endpoint only counts
            // and logs, and refuses a foreign Origin itself (see bff::csp_report).
            format!("{}/csp-report", config.bff_prefix),
        ]);
        Ok(AppState(Arc::new(AppStateInner {
            config: Arc::new(config),
            sessions,
            oidc,
            refresher,
            proxy,
            limiter,
            pwa,
            csp_report_counts,
            metrics,
            audit,
            streams,
            lifecycle,
            csrf_exempt,
        })))
    }

    pub fn csrf_exempt(&self, path: &str) -> bool {
        self.csrf_exempt.iter().any(|p| p == path)
    }

    /// CSP violation reports received so far, `(directive, count)` by directive name (a bounded
    /// set of labels; anything unrecognised counts as `other`).
    pub fn csp_reports(&self) -> Vec<(String, u64)> {
        self.csp_report_counts.snapshot()
    }

    /// The audit context (client address, user agent, request id) of a request's parts.
    pub fn audit_context(
        &self,
        headers: &::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> audit::AuditContext {
        if !self.audit.enabled() {
            return audit::AuditContext::default();
        }
        audit::AuditContext::new(headers, peer, &self.config.server.trusted_proxies)
    }
}

/// The whole HTTP stack, as a `Router` (what tests drive in-process; see [`public_service`]).
pub fn app(state: AppState) -> Router {
    Router::new().fallback_service(public_service(state))
}

/// The public listener's stack, outermost layer first (the module docs list them).
pub type Public = AroundService<
    metrics::Track,
    WrapService<
        telemetry::RequestSpan,
        AroundService<
            SecurityHeaders,
            AroundService<
                pwa::FallbackCsp,
                AroundService<
                    http::hygiene::RejectUnsafeRequests,
                    health::Probes<
                        WrapService<
                            session::layer::LoadSession,
                            AroundService<csrf::RequireToken, Router>,
                        >,
                    >,
                >,
            >,
        >,
    >,
>;

/// The whole HTTP stack as the server runs it: the same as [`app`] without its outer `Router`.
///
/// The middleware is composed once around the routers (`ServiceBuilder`), not with
/// `Router::layer`: that wraps every route in its own boxed copy of the stack, and each layer
/// then clones the boxed rest of it on every request, so the allocations per request grew with
/// the square of the number of layers (measured in docs/performance.md). The type is spelled
/// out so that nothing boxes it either.
pub fn public_service(state: AppState) -> Public {
    let routed = Router::new()
        .nest(&state.config.bff_prefix, bff::router())
        .merge(compose::router(&state.config.compose))
        .fallback(proxy::dispatch)
        .with_state(state.clone());
    ServiceBuilder::new()
        .layer(AroundLayer(metrics::Track(state.clone())))
        .layer(WrapLayer(telemetry::RequestSpan(state.clone())))
        .layer(AroundLayer(SecurityHeaders::new(&state.config.headers)))
        // Inside the security headers, outside everything else: every response, errors of the
        // hygiene layer included, leaves with a Content-Security-Policy.
        .layer(AroundLayer(pwa::FallbackCsp(state.pwa.clone())))
        .layer(AroundLayer(http::hygiene::RejectUnsafeRequests))
        // Probes sit beside the session and CSRF layers, so they never depend on (or touch) a
        // session.
        .layer(health::ProbesLayer(state.clone()))
        .layer(WrapLayer(session::layer::LoadSession(state.clone())))
        .layer(AroundLayer(csrf::RequireToken(state)))
        .service(routed)
}
