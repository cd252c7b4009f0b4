//! The configuration file exactly as written: serde structs that reject unknown keys.
//!
//! Nothing here is validated beyond syntax; [`super::Config::from_raw`] turns it into the typed
//! runtime configuration and reports every problem at once.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub session: RawSession,
    pub oidc: RawOidc,
    #[serde(default)]
    pub bff: RawBff,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub logging: RawLogging,
    pub static_files: Option<RawStatic>,
    #[serde(default)]
    pub csp: RawCsp,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    #[serde(default)]
    pub headers: RawHeaders,
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub tracing: RawTracing,
    #[serde(default)]
    pub aggregates: Vec<super::compose::RawAggregate>,
    #[serde(default)]
    pub profiles: Vec<super::compose::RawProfile>,
}

/// `[audit]`: the security audit log (see `crate::audit`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub target: Option<String>,
    pub path: Option<String>,
    pub subject: Option<String>,
    pub hash_key_env: Option<String>,
}

/// `[headers]`: the hardening headers sent on every response (see `http::security_headers`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub hsts: Option<String>,
    pub hsts_max_age: Option<String>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    pub cross_origin_resource_policy: Option<String>,
    pub clear_site_data_on_logout: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub login_per_ip: Option<String>,
    pub handshake_per_ip: Option<String>,
    pub handshake_per_username: Option<String>,
    pub csp_report_per_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    pub root: String,
    pub spa_fallback: Option<bool>,
    pub service_worker: Option<String>,
    pub immutable_pattern: Option<String>,
    pub precompressed: Option<bool>,
}

/// `[csp]`: the Content-Security-Policy of the PWA's HTML (see `crate::pwa`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsp {
    pub enabled: Option<bool>,
    pub report_only: Option<bool>,
    pub style_nonce: Option<bool>,
    pub require_trusted_types: Option<bool>,
    pub trusted_types: Option<Vec<String>>,
    pub report: Option<bool>,
    pub report_to: Option<bool>,
    #[serde(default)]
    pub default_src: Vec<String>,
    #[serde(default)]
    pub script_src: Vec<String>,
    #[serde(default)]
    pub style_src: Vec<String>,
    #[serde(default)]
    pub img_src: Vec<String>,
    #[serde(default)]
    pub connect_src: Vec<String>,
    #[serde(default)]
    pub font_src: Vec<String>,
    #[serde(default)]
    pub media_src: Vec<String>,
    #[serde(default)]
    pub worker_src: Vec<String>,
    #[serde(default)]
    pub manifest_src: Vec<String>,
    #[serde(default)]
    pub frame_src: Vec<String>,
    #[serde(default)]
    pub form_action: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    pub public_origin: String,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub tls: Option<RawTls>,
    pub max_request_body: Option<String>,
    pub max_header_bytes: Option<String>,
    pub header_read_timeout: Option<String>,
    pub shutdown_delay: Option<String>,
    pub drain_timeout: Option<String>,
    pub worker_threads: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie_name: Option<String>,
    pub absolute_lifetime: Option<String>,
    pub idle_timeout: Option<String>,
    pub store: Option<String>,
    pub file_path: Option<String>,
    pub redis_url: Option<String>,
    pub redis_cluster_urls: Option<Vec<String>>,
    pub redis_username: Option<String>,
    pub redis_password_env: Option<String>,
    pub redis_password_file: Option<String>,
    pub redis_timeout: Option<String>,
    pub redis_key_prefix: Option<String>,
    pub redis_ca_file: Option<String>,
    pub keys_env: Option<String>,
    pub keys_file: Option<String>,
    pub stream_recheck_interval: Option<String>,
    pub open_cache_entries: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub extra_auth_params: BTreeMap<String, String>,
    pub prompt_consent_for_offline_access: Option<bool>,
    pub session_claims: Option<Vec<String>>,
    pub refresh_skew: Option<String>,
    pub http_timeout: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub login_timeout: Option<String>,
    #[serde(default)]
    pub dangerous_send_id_token_hint_on_logout: bool,
    #[serde(default)]
    pub password_grant: bool,
    pub token_endpoint_auth_method: Option<String>,
    pub id_token_signing_alg: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBff {
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    pub upstream: String,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// How long an idle upstream connection is kept for reuse.
    pub idle_timeout: Option<String>,
    /// Allows WebSocket upgrades on this route (off by default).
    #[serde(default)]
    pub websocket: bool,
    /// PEM roots that replace the public web PKI for this (`https`) upstream: a private CA.
    pub ca_file: Option<String>,
    /// Policy keys (see `super::compose::RawPolicy`), spelled out rather than
    /// `#[serde(flatten)]`: serde does not support `flatten` together with
    /// `deny_unknown_fields`, and a misspelt route key must stay an error.
    pub methods: Option<Vec<String>>,
    pub public: Option<bool>,
    #[serde(default)]
    pub require_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub require_scopes: Vec<String>,
    pub profile: Option<String>,
}

/// `[tracing]`: OTLP export of request spans (see `super::tracing`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sampling_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub format: Option<String>,
}
