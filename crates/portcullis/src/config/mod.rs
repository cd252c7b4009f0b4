//! Configuration: a TOML file, validated into typed settings with every problem reported at once.
//!
//! Secrets (client secret, session keys) come from environment variables or files named in the
//! file, never inline, so the file itself can live in version control.

mod compose;
mod headers;
mod oidc;
mod operations;
mod pwa;
mod raw;
mod routes;
pub mod secret;
mod store;
mod trace_export;
mod units;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use url::Url;

use crate::crypto::keyring::KeyRing;
pub use compose::{
    AggregateConfig, ComposeConfig, PROFILE_HEADER, PartConfig, ProfileConfig, RoutePolicy,
    path_matches,
};
pub use headers::{HeadersConfig, Hsts};
pub use pwa::{CspConfig, StaticConfig};
pub use raw::RawConfig;
use routes::check_prefix;
pub use routes::path_within;
pub use secret::Secret;
pub use trace_export::TracingConfig;

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionConfig,
    pub oidc: OidcConfig,
    pub bff_prefix: String,
    pub routes: Vec<RouteConfig>,
    pub log_format: LogFormat,
    /// `[static_files]`: the PWA's files, served for GET/HEAD of paths no route claims.
    pub static_files: Option<StaticConfig>,
    /// `[csp]`: the Content-Security-Policy of the PWA's HTML (fresh nonce per response).
    pub csp: CspConfig,
    /// The operators' listener (health, readiness, session revocation), if configured.
    pub admin: Option<AdminConfig>,
    pub rate_limits: RateLimits,
    /// `[headers]`: hardening headers on every response, `Clear-Site-Data` on logout.
    pub headers: HeadersConfig,
    /// `[audit]`: the security audit log; off when absent.
    pub audit: Option<AuditConfig>,
    /// `[tracing]`: OTLP span export, `None` when off.
    pub tracing: Option<TracingConfig>,
    /// `[[aggregates]]` and `[[profiles]]` (see `crate::compose`).
    pub compose: ComposeConfig,
}

/// Where audit events go and how subjects appear in them.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub target: AuditTarget,
    pub subject: SubjectMode,
    /// HMAC key for subject pseudonyms (`audit.hash_key_env`); unkeyed SHA-256 without it.
    pub hash_key: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMode {
    Hash,
    Clear,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token operators present; from `token_env` / `token_file`.
    pub token: Secret,
}

/// `count` events per `per`, as a token bucket (bursts up to `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// `GET /bff/login` and `GET /bff/callback` per client IP.
    pub login_per_ip: Rate,
    /// `POST /bff/handshake` per client IP.
    pub handshake_per_ip: Rate,
    /// `POST /bff/handshake` per submitted username (whatever the IP).
    pub handshake_per_username: Rate,
    /// `POST /bff/csp-report` per client IP.
    pub csp_report_per_ip: Rate,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_origin: PublicOrigin,
    pub trusted_proxies: Vec<IpNet>,
    pub tls: Option<TlsFiles>,
    pub max_request_body: u64,
    pub max_header_bytes: usize,
    /// How long a client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for the next request); see `server::run` for the default's rationale.
    pub header_read_timeout: Duration,
    /// After SIGTERM/SIGINT: how long to keep accepting while `/readyz` answers 503, so load
    /// balancers stop sending new traffic before the listener closes (default 0 s).
    pub shutdown_delay: Duration,
    /// Then: how long in-flight requests may take to finish before connections are closed.
    pub drain_timeout: Duration,
    /// Threads serving connections, each with its own runtime and upstream pools (default: one
    /// per CPU the process may use).
    pub worker_threads: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The origin the browser sees (`scheme://host[:port]`), used for the redirect URI, the Origin
/// check and `X-Forwarded-*`.
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    /// Serialized ASCII origin, e.g. `https://app.example.com`, exactly as browsers send it in
    /// the `Origin` header.
    pub origin: String,
    pub scheme: String,
    /// `host[:port]` as sent in `Host` / `X-Forwarded-Host`.
    pub host: String,
}

/// Far beyond any machine's core count; each worker is a thread with its own pools.
const MAX_WORKER_THREADS: usize = 1024;

/// Each slot may hold a record of a few KiB: a million is already gigabytes.
const MAX_OPEN_CACHE_ENTRIES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub absolute_lifetime: Duration,
    pub idle_timeout: Duration,
    pub store: StoreConfig,
    pub keys: KeyRing,
    /// How often a long-lived stream (WebSocket, SSE) re-checks in the store that its session
    /// still exists: bounds how late a logout on *another* instance closes it.
    pub stream_recheck_interval: Duration,
    /// Slots of the memo of opened session records (`crate::session`); 0 turns it off.
    pub open_cache_entries: usize,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In this process only (the default).
    Memory,
    /// In this process, persisted to a file so a restart keeps sessions.
    File(PathBuf),
    /// Shared by every instance.
    Redis(RedisConfig),
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Deadline for connecting and for every command.
    pub timeout: Duration,
    pub key_prefix: String,
    /// PEM roots for `rediss://` instead of the public web PKI (a private CA).
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum RedisTopology {
    Standalone(String),
    /// Seed nodes; the client learns the rest and follows MOVED/ASK.
    Cluster(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Exactly as configured: discovery compares it to the provider's `issuer` string for string.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub extra_auth_params: Vec<(String, String)>,
    /// Sends `prompt=consent` when the scopes ask for `offline_access` (and the operator set no
    /// `prompt` of their own): OIDC Core §11 says the request MUST carry it, and providers that
    /// follow the letter (oidc-provider's defaults) drop `offline_access` without it, which means
    /// no refresh token.
    pub prompt_consent_for_offline_access: bool,
    pub session_claims: Vec<String>,
    pub refresh_skew: Duration,
    pub http_timeout: Duration,
    pub login_timeout: Duration,
    pub post_logout_redirect_uri: Url,
    /// Off by default: puts the ID token in the end-session URL the browser follows, which
    /// hands the ID token to the browser. Named "dangerous" on purpose.
    pub dangerous_send_id_token_hint_on_logout: bool,
    /// Enables `POST /bff/handshake` (the password grant, deprecated by RFC 9700).
    pub password_grant: bool,
    /// `None`: chosen from the provider's discovery document. Set when the client is registered
    /// for one method at a provider that offers both: providers hold each client to its own.
    pub token_endpoint_auth_method: Option<ClientAuthMethod>,
    /// The one JWS algorithm of this client's ID tokens and logout tokens, as registered at the
    /// provider (`id_token_signed_response_alg`, OIDC Core §3.1.3.7 step 7). `None`: any
    /// asymmetric algorithm the provider's keys support for ID tokens, and for logout tokens one
    /// this process has seen on ID tokens.
    pub id_token_signing_alg: Option<String>,
}

/// The JWS algorithms an ID or logout token may be signed with: asymmetric only (`none` and HMAC
/// never), and only those the JOSE libraries verify (no ES512: P-521).
pub const ID_TOKEN_SIGNING_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// How the client authenticates with its secret at the token and revocation endpoints
/// (RFC 6749 §2.3.1; OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix on the gateway, e.g. `/api/orders` (no trailing slash).
    pub prefix: String,
    /// Base URL the rest of the path is appended to.
    pub upstream: Url,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How long an idle upstream connection stays in the pool. Shorter than the upstream's own
    /// keep-alive timeout, so the gateway, not the upstream, closes idle connections: a request
    /// sent just as the upstream closes one is lost, and a POST is not sent again (502).
    pub idle_timeout: Duration,
    /// WebSocket upgrades are proxied on this route (session cookie + same `Origin` required);
    /// on every other route an upgrade request is refused.
    pub websocket: bool,
    /// PEM certificates of the CA(s) this `https` upstream's certificate must chain to, instead
    /// of the public web PKI (`ca_file`); `None`: Mozilla's root set.
    pub ca_pem: Option<Vec<u8>>,
    /// Methods, public access, required claims/scopes, fixed client profile.
    pub policy: RoutePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// One problem with the configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found, so an operator fixes them in one pass.
#[derive(Debug, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

pub const DEFAULT_COOKIE_NAME: &str = "__Host-SessionID";
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A parser message with its quoted values blanked: `invalid type: string "…", expected a
/// boolean` says what is wrong without repeating a secret that was put under the wrong key.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                key: "<file>".into(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Config, Problems> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // The message and where, never the offending line itself: it may hold a secret
            // written inline by mistake (`client_secret = "…"` is an unknown key), and this text
            // goes to the terminal and, on a reload, to the logs.
            let at = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before.len() - line_start + 1;
                // The key the line sets, when it is a plain `key = …` line: names are not secret.
                let key = text[line_start..]
                    .lines()
                    .next()
                    .and_then(|l| l.split_once('='))
                    .map(|(k, _)| k.trim())
                    .filter(|k| {
                        !k.is_empty()
                            && k.len() <= 64
                            && k.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
                            })
                    })
                    .map(|k| format!(" (`{k}`)"))
                    .unwrap_or_default();
                format!("line {line}, column {column}{key}: ")
            });
            Problems(vec![Problem {
                key: "<syntax>".into(),
                message: format!(
                    "{}{}",
                    at.unwrap_or_default(),
                    without_quoted_values(e.message().trim()).replace('\n', " ")
                ),
            }])
        })?;
        Self::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Config, Problems> {
        let mut v = Validator::default();
        let server = v.server(raw.server);
        let session = v.session(raw.session);
        let oidc = v.oidc(raw.oidc, server.as_ref().map(|s| &s.public_origin));
        let bff_prefix = v.bff_prefix(raw.bff.prefix);
        let routes = v.routes(raw.routes, &bff_prefix);
        let compose = v.compose(raw.aggregates, raw.profiles, &routes, &bff_prefix);
        let log_format = match raw.logging.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                v.problem(
                    "logging.format",
                    format!("`{other}`: use \"json\" or \"text\""),
                );
                LogFormat::Json
            }
        };
        let static_files = raw.static_files.and_then(|s| v.static_files(s));
        let csp = v.csp(raw.csp);
        let admin = raw.admin.and_then(|a| v.admin(a));
        let audit = raw.audit.and_then(|a| v.audit(a));
        let tracing = trace_export::validate(raw.tracing).unwrap_or_else(|problems| {
            for (key, message) in problems {
                v.problem(key, message);
            }
            None
        });
        let rate_limits = v.rate_limits(raw.rate_limits);
        let headers = v.headers(raw.headers, server.as_ref().map(|s| &s.public_origin));
        match (server, session, oidc, v.problems.is_empty()) {
            (Some(server), Some(session), Some(oidc), true) => Ok(Config {
                admin,
                audit,
                tracing,
                rate_limits,
                headers,
                server,
                session,
                oidc,
                bff_prefix,
                routes,
                compose,
                log_format,
                static_files,
                csp,
            }),
            _ => Err(Problems(v.problems)),
        }
    }

    /// The redirect URI registered at the provider.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}{}/callback",
            self.server.public_origin.origin, self.bff_prefix
        )
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `raw` as the path of a file the gateway creates (never its directory): its directory must
    /// exist, and it must not be a directory itself. Checked here, so `check-config` and a reload
    /// refuse it, not only `serve`.
    fn file_to_create(&mut self, key: &str, raw: &str) -> Option<std::path::PathBuf> {
        let path = std::path::PathBuf::from(raw);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if dir.is_dir() && !path.is_dir() {
            Some(path)
        } else {
            self.problem(key, format!("`{raw}`: not a file in an existing directory"));
            None
        }
    }

    fn ok<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.problem(key, m)).ok()
    }

    fn duration(&mut self, key: &str, v: Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self.ok(key, units::parse_duration(&s)).unwrap_or(default),
        }
    }

    /// A duration something waits for: zero would time out every attempt at once, so it is a
    /// configuration error rather than a gateway that answers nothing but 502/503/504.
    fn timeout(&mut self, key: &str, v: Option<String>, default: Duration) -> Duration {
        let d = self.duration(key, v, default);
        if d.is_zero() {
            self.problem(key, "must be longer than zero");
            return default;
        }
        d
    }

    fn server(&mut self, raw: raw::RawServer) -> Option<ServerConfig> {
        let listen = self.ok(
            "server.listen",
            raw.listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("`{}` is not ip:port ({e})", raw.listen)),
        );
        let public_origin = self.ok("server.public_origin", parse_origin(&raw.public_origin));
        let mut trusted_proxies = Vec::new();
        for (i, p) in raw.trusted_proxies.iter().enumerate() {
            let parsed = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{p}` is not an IP address or CIDR range"));
            if let Some(net) = self.ok(&format!("server.trusted_proxies[{i}]"), parsed) {
                trusted_proxies.push(net);
            }
        }
        let tls = raw.tls.map(|t| TlsFiles {
            cert_file: t.cert_file.into(),
            key_file: t.key_file.into(),
        });
        if let Some(t) = &tls {
            let mut files = true;
            for (key, path) in [
                ("server.tls.cert_file", &t.cert_file),
                ("server.tls.key_file", &t.key_file),
            ] {
                if !path.is_file() {
                    self.problem(key, format!("{} is not a readable file", path.display()));
                    files = false;
                }
            }
            // Loaded as `serve` will, so `check-config` and a reload refuse what `serve` would.
            if files && let Err(problems) = crate::server::tls::server_config(t) {
                for e in problems {
                    self.problem(e.key, e.message);
                }
            }
        }
        let max_request_body = match raw.max_request_body {
            None => 10 << 20,
            Some(s) => self
                .ok("server.max_request_body", units::parse_size(&s))
                .unwrap_or(0),
        };
        let max_header_bytes = match raw.max_header_bytes {
            None => 32 << 10,
            Some(s) => self
                .ok("server.max_header_bytes", units::parse_size(&s))
                .unwrap_or(0),
        };
        if !(4096..=(1 << 20)).contains(&max_header_bytes) {
            self.problem("server.max_header_bytes", "must be between 4KiB and 1MiB");
        }
        let max_header_bytes = usize::try_from(max_header_bytes).unwrap_or(32 << 10);
        let header_read_timeout = match raw.header_read_timeout {
            None => Duration::from_secs(75),
            Some(s) => self
                .ok("server.header_read_timeout", units::parse_duration(&s))
                .unwrap_or_default(),
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&header_read_timeout) {
            self.problem("server.header_read_timeout", "must be between 1s and 1h");
        }
        let shutdown_delay =
            self.duration("server.shutdown_delay", raw.shutdown_delay, Duration::ZERO);
        let drain_timeout = self.duration(
            "server.drain_timeout",
            raw.drain_timeout,
            Duration::from_secs(30),
        );
        if shutdown_delay > Duration::from_secs(600) {
            self.problem("server.shutdown_delay", "must be at most 10m");
        }
        if drain_timeout > Duration::from_secs(3600) {
            self.problem("server.drain_timeout", "must be at most 1h");
        }
        let worker_threads = match raw.worker_threads {
            None => crate::server::default_worker_count(),
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
                .unwrap_or_else(|| {
                    self.problem("server.worker_threads", "must be between 1 and 1024");
                    1
                }),
        };
        Some(ServerConfig {
            listen: listen?,
            public_origin: public_origin?,
            trusted_proxies,
            tls,
            max_request_body,
            max_header_bytes,
            header_read_timeout,
            shutdown_delay,
            drain_timeout,
            worker_threads,
        })
    }

    fn session(&mut self, raw: raw::RawSession) -> Option<SessionConfig> {
        let store = self.store(&raw);
        let cookie_name = raw
            .cookie_name
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.into());
        if !cookie_name.starts_with("__Host-") {
            self.problem(
                "session.cookie_name",
                "must start with `__Host-` (host-only, Secure, Path=/: no sibling domain can set or overwrite it)",
            );
        }
        if cookie_name.len() > 64 || !cookie_name.bytes().all(is_cookie_name_byte) {
            self.problem(
                "session.cookie_name",
                "must be a short cookie token (letters, digits, `-_.`)",
            );
        }
        let absolute_lifetime = self.duration(
            "session.absolute_lifetime",
            raw.absolute_lifetime,
            Duration::from_secs(8 * 3600),
        );
        let idle_timeout = self.duration(
            "session.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(30 * 60),
        );
        if absolute_lifetime < Duration::from_secs(60) {
            self.problem("session.absolute_lifetime", "must be at least 1m");
        }
        if idle_timeout < Duration::from_secs(60) || idle_timeout > absolute_lifetime {
            self.problem(
                "session.idle_timeout",
                "must be at least 1m and no longer than session.absolute_lifetime",
            );
        }
        let keys = secret::load(
            "session.keys_env",
            raw.keys_env.as_deref(),
            "session.keys_file",
            raw.keys_file.as_deref(),
        )
        .and_then(|s| {
            KeyRing::parse(s.expose()).map_err(|e| {
                let key = if raw.keys_env.is_some() {
                    "session.keys_env"
                } else {
                    "session.keys_file"
                };
                format!("`{key}`: {e}")
            })
        });
        let keys = self.ok("session.keys", keys);
        let stream_recheck_interval = self.duration(
            "session.stream_recheck_interval",
            raw.stream_recheck_interval,
            Duration::from_secs(30),
        );
        if stream_recheck_interval < Duration::from_secs(1)
            || stream_recheck_interval > Duration::from_secs(3600)
        {
            self.problem(
                "session.stream_recheck_interval",
                "must be between 1s and 1h",
            );
        }
        let open_cache_entries = raw
            .open_cache_entries
            .unwrap_or(crate::session::DEFAULT_OPEN_CACHE_ENTRIES);
        if open_cache_entries > MAX_OPEN_CACHE_ENTRIES {
            self.problem(
                "session.open_cache_entries",
                "must be at most 1048576 (each slot may hold a session record)",
            );
        }
        Some(SessionConfig {
            cookie_name,
            open_cache_entries,
            absolute_lifetime,
            idle_timeout,
            stream_recheck_interval,
            store: store?,
            keys: keys?,
        })
    }

    fn bff_prefix(&mut self, raw: Option<String>) -> String {
        let p = raw.unwrap_or_else(|| "/bff".into());
        if let Err(e) = check_prefix(&p) {
            self.problem("bff.prefix", e);
        }
        p
    }
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn parse_origin(s: &str) -> Result<PublicOrigin, String> {
    let u = Url::parse(s).map_err(|e| format!("`{s}` is not an absolute URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be http(s)".into());
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return Err(format!(
            "`{s}` must be an origin only, like https://app.example.com"
        ));
    }
    let host = u.host_str().ok_or("has no host")?;
    let origin = u.origin().ascii_serialization();
    let host_port = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Ok(PublicOrigin {
        origin,
        scheme: u.scheme().to_owned(),
        host: host_port,
    })
}

#[cfg(test)]
mod tests;
