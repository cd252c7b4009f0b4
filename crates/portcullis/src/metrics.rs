//! Prometheus metrics (`prometheus-client`), scraped at `GET /metrics` on the admin listener.
//!
//! One registry per [`crate::AppState`] (no global recorder), so several gateways in one process
//! — the tests — keep separate counts. Every label value is a `&'static str` from a fixed list or
//! an HTTP status code: never a path, a host, a user or a session. Recording is an atomic add
//! (plus, for labelled families, a read-locked hash lookup); nothing allocates once a label set
//! has been seen. See `docs/observability.md` for the list.

use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{extract::Request, response::Response};
use bytes::Bytes;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    AppState,
    config::path_within,
    http::around::{Around, Before},
    store::{Entry, IndexKey, LockToken, MemoryStore, SessionStore, StoreError, StoreKey},
};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    class: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    flow: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKindLabels {
    route: String,
    kind: &'static str,
}

/// A route prefix or an aggregate path, as a label value: bounded by the configuration, and
/// shared, so recording a request clones a pointer rather than a string. It carries the handles
/// of its common statuses' counters (see [`HotLabels`]); equality and hashing are by name only,
/// so the routes a reload builds count on in the same series.
#[derive(Clone, Debug)]
pub struct RouteName(Arc<RouteNameInner>);

#[derive(Debug)]
struct RouteNameInner {
    name: Box<str>,
    hot: [OnceLock<Counter>; HOT_STATUSES.len()],
}

impl RouteName {
    pub fn new(name: &str) -> Self {
        RouteName(Arc::new(RouteNameInner {
            name: name.into(),
            hot: Default::default(),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for RouteName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for RouteName {}

impl std::hash::Hash for RouteName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&self.0.name)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    route: RouteName,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// For the gateway's own work and store round trips: 50 µs … ~0.8 s.
fn fine_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

/// The gateway's metrics. Cheap to share (`Arc`); see the module docs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<ClassLabel>,
    upstream_duration: Histogram,
    overhead: Histogram,
    route_requests: Family<RouteStatusLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    refreshes: Family<OutcomeLabel, Counter>,
    csrf_rejections: Family<ReasonLabel, Counter>,
    store_errors: Family<OpLabel, Counter>,
    store_duration: HistogramFamily<OpLabel>,
    upstream_errors: Family<RouteKindLabels, Counter>,
    config_reloads: Family<OutcomeLabel, Counter>,
    memory_store: OnceLock<Arc<MemoryStore>>,
    hot: HotLabels,
}

/// Route classes, in the order of the cached handles in [`HotLabels`].
const CLASSES: [&str; 5] = ["health", "bff", "api", "static", "other"];
/// The statuses almost every response has; others go through the family's hash map.
const HOT_STATUSES: [u16; 12] = [200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 503];
/// The session store's operations (`MeteredStore`), most frequent first.
const STORE_OPS: [&str; 13] = [
    "get",
    "touch",
    "set",
    "replace",
    "take",
    "delete",
    "lock",
    "unlock",
    "index_add",
    "index_members",
    "index_remove",
    "delete_all",
    "ping",
];

/// Handles to the request counters and histograms of the common label sets, resolved on first
/// use: recording is then an atomic add, with no lock and no label hashing (docs/performance.md).
/// A handle shares its value with the family's entry, so `/metrics` shows the same figures; a
/// label set appears there only once it has been recorded, as before.
#[derive(Debug, Default)]
struct HotLabels {
    durations: [OnceLock<Histogram>; CLASSES.len()],
    requests: [[OnceLock<Counter>; HOT_STATUSES.len()]; CLASSES.len()],
    store: [OnceLock<Histogram>; STORE_OPS.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route class and status code",
            requests.clone(),
        );
        let request_duration: HistogramFamily<ClassLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Whole-request latency in the gateway (upstream time included), by route class",
            request_duration.clone(),
        );
        let upstream_duration = latency_histogram();
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a proxied request to the upstream's response headers (or error)",
            upstream_duration.clone(),
        );
        let overhead = fine_histogram();
        registry.register(
            "gateway_overhead_seconds",
            "Proxied requests: from the request's arrival to its sending upstream (the gateway's own work, token refreshes included)",
            overhead.clone(),
        );
        let route_requests = Family::<RouteStatusLabels, Counter>::default();
        registry.register(
            "route_requests",
            "Responses of configured routes and aggregates, by route (prefix or aggregate path) and status code",
            route_requests.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Login attempts (flow: callback, handshake) by outcome",
            logins.clone(),
        );
        let refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access token refreshes by outcome",
            refreshes.clone(),
        );
        let csrf_rejections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "csrf_rejections",
            "State-changing requests refused by the CSRF layer, by reason",
            csrf_rejections.clone(),
        );
        let store_errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Session store operations that failed, by operation",
            store_errors.clone(),
        );
        let store_duration: HistogramFamily<OpLabel> = Family::new_with_constructor(fine_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Session store operations, failed ones included, by operation",
            store_duration.clone(),
        );
        let upstream_errors = Family::<RouteKindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Proxied requests that got no upstream response, by route and kind",
            upstream_errors.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, admin POST /reload) by outcome",
            config_reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            overhead,
            route_requests,
            logins,
            refreshes,
            csrf_rejections,
            store_errors,
            store_duration,
            upstream_errors,
            config_reloads,
            memory_store: OnceLock::new(),
            hot: HotLabels::default(),
        }
    }

    /// Reports `portcullis_store_entries` from this in-memory store at each scrape.
    pub fn watch_memory_store(&self, store: Arc<MemoryStore>) {
        let _ = self.memory_store.set(store);
    }

    pub fn request(&self, class: &'static str, status: u16, elapsed: Duration) {
        let Some(c) = CLASSES.iter().position(|k| *k == class) else {
            self.requests
                .get_or_create(&RequestLabels { class, status })
                .inc();
            self.request_duration
                .get_or_create(&ClassLabel { class })
                .observe(elapsed.as_secs_f64());
            return;
        };
        match HOT_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.hot.requests[c][i]
                .get_or_init(|| {
                    Counter::clone(
                        &self
                            .requests
                            .get_or_create(&RequestLabels { class, status }),
                    )
                })
                .inc(),
            None => self
                .requests
                .get_or_create(&RequestLabels { class, status })
                .inc(),
        };
        self.hot.durations[c]
            .get_or_init(|| {
                Histogram::clone(&self.request_duration.get_or_create(&ClassLabel { class }))
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    /// A response of a configured route or aggregate.
    pub fn route_request(&self, route: &RouteName, status: u16) {
        let family = || {
            self.route_requests.get_or_create(&RouteStatusLabels {
                route: route.clone(),
                status,
            })
        };
        match HOT_STATUSES.iter().position(|s| *s == status) {
            Some(i) => route.0.hot[i]
                .get_or_init(|| Counter::clone(&family()))
                .inc(),
            None => family().inc(),
        };
    }

    /// The gateway's own time for a proxied request: from its arrival to its sending upstream.
    pub fn overhead(&self, elapsed: Duration) {
        self.overhead.observe(elapsed.as_secs_f64());
    }

    /// `route`: the route's prefix; `kind`: `timeout`, `connect` or `other`.
    pub fn upstream_error(&self, route: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&RouteKindLabels {
                route: route.to_owned(),
                kind,
            })
            .inc();
    }

    /// `flow`: `callback` or `handshake`; `outcome`: `success`, `failure`, `declined`,
    /// `rate_limited` or `error`.
    pub fn login(&self, flow: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { flow, outcome })
            .inc();
    }

    /// `outcome`: `success`, `refused`, `unavailable` or `ended` (the session ended meanwhile).
    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// `reason`: `missing`, `malformed`, `mismatch`, `cross_origin` or `no_session`.
    pub fn csrf_rejection(&self, reason: &'static str) {
        self.csrf_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// `outcome`: `success`, `invalid` (validation failed), `refused` (a setting that needs a
    /// restart changed) or `error` (building the new state failed).
    pub fn config_reload(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabel { op }).inc();
    }

    pub fn store_operation(&self, op: &'static str, elapsed: Duration) {
        let family = || Histogram::clone(&self.store_duration.get_or_create(&OpLabel { op }));
        let seconds = elapsed.as_secs_f64();
        match STORE_OPS.iter().position(|o| *o == op) {
            Some(i) => self.hot.store[i].get_or_init(family).observe(seconds),
            None => family().observe(seconds),
        }
    }

    /// The exposition text (OpenMetrics), CSP report counts appended.
    pub fn render(&self, csp_reports: &[(String, u64)]) -> String {
        let mut out = String::with_capacity(8192);
        let _ = text::encode_registry(&mut out, &self.registry);
        out.push_str(
            "# HELP portcullis_csp_reports CSP violation reports received, by directive.\n\
             # TYPE portcullis_csp_reports counter\n",
        );
        for (directive, n) in csp_reports {
            // Directive names come from a fixed list (`other` for the rest): nothing to escape.
            let _ = writeln!(
                out,
                "portcullis_csp_reports_total{{directive=\"{directive}\"}} {n}"
            );
        }
        if let Some(store) = self.memory_store.get() {
            let _ = write!(
                out,
                "# HELP portcullis_store_entries Entries in the in-memory session store (sessions, login state, indexes, locks).\n\
                 # TYPE portcullis_store_entries gauge\n\
                 portcullis_store_entries {}\n",
                store.len()
            );
        }
        let _ = text::encode_eof(&mut out);
        out
    }
}

/// The route class of a path (a bounded label) and, for a configured route or aggregate, its
/// name (prefix or aggregate path).
pub fn route_class(state: &AppState, path: &str) -> (&'static str, Option<RouteName>) {
    if path == "/healthz" || path == "/readyz" {
        ("health", None)
    } else if path_within(path, &state.config.bff_prefix) {
        ("bff", None)
    } else if let Some(name) = state.proxy.route_name(path) {
        ("api", Some(name.clone()))
    } else if state.config.static_files.is_some() {
        ("static", None)
    } else {
        ("other", None)
    }
}

/// Outermost layer: counts every response and times the whole request.
#[derive(Debug, Clone)]
pub struct Track(pub AppState);

impl Around for Track {
    type Carry = (&'static str, Option<RouteName>, std::time::Instant);

    fn before(&self, req: &mut Request) -> Before<Self::Carry> {
        let (class, route) = route_class(&self.0, req.uri().path());
        Before::Continue((class, route, std::time::Instant::now()))
    }

    fn after(&self, (class, route, started): Self::Carry, resp: &mut Response) {
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        let metrics = &self.0.metrics;
        metrics.request(class, status, elapsed);
        if let Some(route) = &route {
            metrics.route_request(route, status);
        }
    }
}

/// A store that counts its backend's failures (`portcullis_store_errors_total{op}`).
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    /// Times the operation and counts its failure.
    async fn count<T>(
        &self,
        op: &'static str,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let r = operation.await;
        self.metrics.store_operation(op, started.elapsed());
        if r.is_err() {
            self.metrics.store_error(op);
        }
        r
    }
}

#[async_trait::async_trait]
impl SessionStore for MeteredStore {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError> {
        self.count("get", self.inner.get(key)).await
    }
    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.count("set", self.inner.set(key, value, ttl)).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.count("replace", self.inner.replace(key, value, ttl))
            .await
    }
    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        self.count("touch", self.inner.touch(key, ttl)).await
    }
    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        self.count("take", self.inner.take(key)).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.count("delete", self.inner.delete(key)).await
    }
    async fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        self.count("lock", self.inner.try_lock(key, lease)).await
    }
    async fn unlock(&self, key: &StoreKey, token: &LockToken) -> Result<(), StoreError> {
        self.count("unlock", self.inner.unlock(key, token)).await
    }
    async fn index_add(
        &self,
        index: &IndexKey,
        member: &StoreKey,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.count("index_add", self.inner.index_add(index, member, ttl))
            .await
    }
    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError> {
        self.count("index_members", self.inner.index_members(index))
            .await
    }
    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError> {
        self.count("index_remove", self.inner.index_remove(index, member))
            .await
    }
    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError> {
        self.count("delete_all", self.inner.delete_all(prefix))
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.count("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload builds new routes: their names must count on in the same series, through the
    /// cached handles (200) and the family (418) alike.
    #[test]
    fn routes_rebuilt_by_a_reload_share_their_series() {
        let m = Metrics::new();
        for _ in 0..2 {
            let route = RouteName::new("/api/orders");
            m.route_request(&route, 200);
            m.route_request(&route, 418);
        }
        m.route_request(&RouteName::new("/api/users/{id}/card"), 200);
        let text = m.render(&[]);
        for line in [
            "portcullis_route_requests_total{route=\"/api/orders\",status=\"200\"} 2",
            "portcullis_route_requests_total{route=\"/api/orders\",status=\"418\"} 2",
            "portcullis_route_requests_total{route=\"/api/users/{id}/card\",status=\"200\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn render_has_counters_csp_and_eof() {
        let m = Metrics::new();
        m.request("api", 200, Duration::from_millis(3));
        m.csrf_rejection("mismatch");
        let text = m.render(&[("script-src".into(), 2)]);
        assert!(text.contains("portcullis_http_requests_total{class=\"api\",status=\"200\"} 1"));
        assert!(text.contains("portcullis_csrf_rejections_total{reason=\"mismatch\"} 1"));
        assert!(text.contains("portcullis_csp_reports_total{directive=\"script-src\"} 2"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn cached_handles_count_into_the_family() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.request("api", 200, Duration::from_millis(1));
        }
        m.request("api", 418, Duration::from_millis(1));
        m.request("bff", 401, Duration::from_millis(1));
        let text = m.render(&[]);
        assert!(text.contains("portcullis_http_requests_total{class=\"api\",status=\"200\"} 3"));
        assert!(text.contains("portcullis_http_requests_total{class=\"api\",status=\"418\"} 1"));
        assert!(text.contains("portcullis_http_requests_total{class=\"bff\",status=\"401\"} 1"));
        assert!(text.contains("portcullis_http_request_duration_seconds_count{class=\"api\"} 4"));
        assert!(!text.contains("class=\"static\""), "{text}");
    }
}
