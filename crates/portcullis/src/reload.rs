//! Hot reload (SIGHUP, or `POST /reload` on the admin listener): re-read and validate the config
//! file, then swap in a new [`AppState`] built around the running one's live parts.
//!
//! Kept across a reload: the session store (so every session survives), rate-limit counters,
//! metrics, the token refresher, CSP report counts, the shutdown flag, and the OpenID Provider
//! client when `[oidc]` and the redirect URI are unchanged. Rebuilt from the new file: routes,
//! CSP and headers, the key ring (a session sealed under any key still in the ring keeps
//! opening), rate limits, the audit log (re-opened: this also follows a rotated audit file),
//! lifetimes, everything else read per request.
//!
//! Refused as a whole (the old config keeps serving, the reason is logged): an invalid file
//! (every problem is logged), or a change to a setting that is bound at startup — listen
//! addresses, TLS files, header limits, the worker thread count, the store backend, the admin
//! listener's address, the log format, `[tracing]`, and with the file store the active session
//! key. Those need a restart. A changed `[oidc]` is discovered before the swap; if the provider
//! cannot be reached the reload is refused too.

use std::{path::PathBuf, sync::Arc};

use crate::{
    AppState,
    bff::csp_report::ReportCounts,
    config::{Config, Problems, StoreConfig},
    health::Lifecycle,
    metrics::Metrics,
    oidc::{OidcError, OidcProvider},
    ratelimit::RateLimiter,
    session::{refresh::Refresher, streams::Streams},
    store::SessionStore,
};

/// The parts of a running state a reload keeps (see the module docs).
#[derive(Debug)]
pub struct Carried {
    /// Already wrapped in [`crate::metrics::MeteredStore`].
    pub store: Arc<dyn SessionStore>,
    pub oidc: Arc<OidcProvider>,
    pub limiter: Arc<dyn RateLimiter>,
    pub refresher: Refresher,
    pub csp_report_counts: Arc<ReportCounts>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    /// The live WebSocket/SSE streams: a reload keeps them, so a later logout or revocation
    /// still closes streams opened before it at once.
    pub streams: Streams,
}

impl Carried {
    pub fn of(state: &AppState) -> Self {
        Carried {
            store: Arc::clone(state.sessions.store()),
            oidc: Arc::clone(&state.oidc),
            limiter: Arc::clone(&state.limiter),
            refresher: state.refresher.clone(),
            csp_report_counts: Arc::clone(&state.csp_report_counts),
            metrics: Arc::clone(&state.metrics),
            lifecycle: Arc::clone(&state.lifecycle),
            streams: state.streams.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is invalid: {0}")]
    Invalid(Problems),
    #[error("settings that need a restart changed: {}; restart to apply them", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    #[error("the OpenID Provider of the new configuration could not be loaded: {0}")]
    Provider(OidcError),
    #[error("the new configuration could not be applied: {0:#}")]
    Build(anyhow::Error),
}

impl ReloadError {
    /// The `outcome` label of `portcullis_config_reloads_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::NeedsRestart(_) => "refused",
            ReloadError::Provider(_) | ReloadError::Build(_) => "error",
        }
    }
}

/// Settings bound at startup that differ between `old` and `new`.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let mut changed = Vec::new();
    let mut check = |name, a: String, b: String| {
        if a != b {
            changed.push(name);
        }
    };
    check(
        "server.listen",
        d(&old.server.listen),
        d(&new.server.listen),
    );
    check("server.tls", d(&old.server.tls), d(&new.server.tls));
    check(
        "server.max_header_bytes",
        d(&old.server.max_header_bytes),
        d(&new.server.max_header_bytes),
    );
    check(
        "server.header_read_timeout",
        d(&old.server.header_read_timeout),
        d(&new.server.header_read_timeout),
    );
    check(
        "server.worker_threads",
        d(&old.server.worker_threads),
        d(&new.server.worker_threads),
    );
    // Secrets print redacted, so a changed Redis password alone is not seen (nor applied).
    check(
        "session.store",
        d(&old.session.store),
        d(&new.session.store),
    );
    check(
        "admin.listen",
        d(&old.admin.as_ref().map(|a| a.listen)),
        d(&new.admin.as_ref().map(|a| a.listen)),
    );
    check("logging.format", d(&old.log_format), d(&new.log_format));
    check("tracing", d(&old.tracing), d(&new.tracing));
    // The file store's key-ring canary is sealed under the active key when the file is opened:
    // switching the active key live would leave it under a key that is later removed, and the
    // next start would refuse the file. Rotate with a restart there (`docs/operations.md`).
    if matches!(new.session.store, StoreConfig::File(_))
        && old.session.keys.active().id != new.session.keys.active().id
    {
        changed.push("the active session key (with the file store)");
    }
    changed
}

/// `[oidc]` (secret included) and the redirect URI are the same: the provider client and its
/// discovered metadata can be kept.
fn same_provider(old: &Config, new: &Config) -> bool {
    format!("{:?}", old.oidc) == format!("{:?}", new.oidc)
        && old.oidc.client_secret.expose() == new.oidc.client_secret.expose()
        && old.redirect_uri() == new.redirect_uri()
}

/// Reads and validates `path` and builds the state to swap in; `current` is not touched.
pub async fn prepare(current: &AppState, path: &std::path::Path) -> Result<AppState, ReloadError> {
    let config = Config::load(path).map_err(ReloadError::Invalid)?;
    let fixed = needs_restart(&current.config, &config);
    if !fixed.is_empty() {
        return Err(ReloadError::NeedsRestart(fixed));
    }
    let mut carried = Carried::of(current);
    if !same_provider(&current.config, &config) {
        let oidc = OidcProvider::new(config.oidc.clone(), config.redirect_uri())
            .map_err(ReloadError::Provider)?;
        oidc.discover().await.map_err(ReloadError::Provider)?;
        let oidc = Arc::new(oidc);
        oidc.spawn_key_refresh();
        carried.oidc = oidc;
    }
    AppState::from_parts(config, carried).map_err(ReloadError::Build)
}

/// What a reload swaps: implemented by the server, which owns the live routers.
pub trait Swap: Send + Sync {
    fn current(&self) -> AppState;
    fn install(&self, state: AppState);
}

/// Reloads the config file into a [`Swap`], one reload at a time.
pub struct Reloader {
    path: PathBuf,
    target: Arc<dyn Swap>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(path: PathBuf, target: Arc<dyn Swap>) -> Self {
        Reloader {
            path,
            target,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Validates and applies the file; on any error the running config stays. Logged and
    /// counted either way.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let current = self.target.current();
        let metrics = Arc::clone(&current.metrics);
        match prepare(&current, &self.path).await {
            Ok(next) => {
                let routes = next.config.routes.len();
                self.target.install(next);
                metrics.config_reload("success");
                tracing::info!(path = %self.path.display(), routes, "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                metrics.config_reload(e.outcome());
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "configuration reload refused; the running configuration stays"
                );
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::KeyRing;

    fn config(listen: &str, store: &str, ring: &[&str]) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-reload-{}-{}",
            std::process::id(),
            crate::crypto::random::token::<6>().expect("rng")
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let (keys, secret) = (dir.join("keys"), dir.join("secret"));
        std::fs::write(&keys, ring.join(",")).expect("write");
        std::fs::write(&secret, "s3cret").expect("write");
        Config::from_toml(&format!(
            "[server]\nlisten = \"{listen}\"\npublic_origin = \"http://localhost:8080\"\n\
             [session]\nkeys_file = \"{}\"\n{store}\n\
             [oidc]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
            keys.display(),
            secret.display()
        ))
        .expect("valid config")
    }

    #[test]
    fn only_settings_bound_at_startup_need_a_restart() {
        let (a, b) = (
            KeyRing::generate_encoded().expect("rng"),
            KeyRing::generate_encoded().expect("rng"),
        );
        let old = config("127.0.0.1:8080", "", &[&a]);
        // A new active key with the memory store: live.
        assert!(needs_restart(&old, &config("127.0.0.1:8080", "", &[&b, &a])).is_empty());
        assert_eq!(
            needs_restart(&old, &config("127.0.0.1:8081", "", &[&a])),
            ["server.listen"]
        );
        let mut more_workers = config("127.0.0.1:8080", "", &[&a]);
        more_workers.server.worker_threads = old.server.worker_threads + 1;
        assert_eq!(
            needs_restart(&old, &more_workers),
            ["server.worker_threads"]
        );
        let file = "store = \"file\"\nfile_path = \"/tmp/portcullis-reload-test.redb\"";
        let old_file = config("127.0.0.1:8080", file, &[&a]);
        assert_eq!(
            needs_restart(&old, &old_file),
            ["session.store"],
            "memory → file"
        );
        // With the file store: another key may be added, the active one not switched.
        assert!(needs_restart(&old_file, &config("127.0.0.1:8080", file, &[&a, &b])).is_empty());
        assert_eq!(
            needs_restart(&old_file, &config("127.0.0.1:8080", file, &[&b, &a])),
            ["the active session key (with the file store)"]
        );
    }
}
