//! Brute-force and abuse protection: per-client-IP and per-username rate limits on the login,
//! callback and handshake endpoints (and per IP on the CSP report sink), answered with 429 and
//! `Retry-After`.
//!
//! Every limit is a token bucket in GCRA form ([`Rate`] `{ count, per }`): a burst of up to
//! `count` events, refilled at `count` per `per`. A refused event takes no token, so a client that
//! keeps hammering is let in again as soon as the bucket refills, no later.
//!
//! Two backends, chosen from the session store ([`for_store`]):
//! * [`MemoryLimiter`] (memory and file stores, one instance): `governor`'s keyed limiters in this
//!   process, swept so idle keys do not accumulate.
//! * [`RedisLimiter`] (Redis store): one Lua script per check on the same Redis (standalone or
//!   Cluster) as the sessions, so every instance draws from one budget; a limit does not multiply
//!   with the number of instances.
//!
//! Keys are never the IP or the username in clear: [`LimitKey`] is a 128-bit SHA-256 digest of
//! the normalised value, so a check costs O(1) time and memory whatever a client sends, and a
//! Redis dump shows no user names. (An unkeyed hash is pseudonymisation, not secrecy: a dictionary
//! of candidate names reverses it. It keeps names out of casual view, as the session indexes do.)
//!
//! Handlers call `<dyn RateLimiter>::check` through `AppState::limiter`:
//!
//! ```text
//! let ip = LimitKey::client_ip(peer, req.headers(), &state.config.server.trusted_proxies);
//! state.limiter.check(Bucket::LoginPerIp, &ip, state.config.rate_limits.login_per_ip).await?;
//! ```

mod memory;
mod redis;
#[cfg(test)]
mod tests;

use std::{fmt, net::IpAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use http::HeaderMap;
use ipnet::IpNet;

pub use self::{memory::MemoryLimiter, redis::RedisLimiter};
use crate::{
    config::{Rate, RateLimits, StoreConfig},
    http::problem::ApiError,
    store::StoreError,
};

/// Which limit a check counts against. Each bucket has its own key space, so one client's
/// logins never spend its handshake budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `GET /bff/login` and `GET /bff/callback`, per client IP.
    LoginPerIp,
    /// `POST /bff/handshake`, per client IP.
    HandshakePerIp,
    /// `POST /bff/handshake`, per submitted username (whatever the IP).
    HandshakePerUsername,
    /// `POST /bff/csp-report`, per client IP.
    CspReportPerIp,
}

impl Bucket {
    /// Short, stable name: part of the Redis key and of log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::LoginPerIp => "login-ip",
            Bucket::HandshakePerIp => "handshake-ip",
            Bucket::HandshakePerUsername => "handshake-user",
            Bucket::CspReportPerIp => "csp-report-ip",
        }
    }

    /// The configured rate for this bucket.
    pub fn rate(self, limits: &RateLimits) -> Rate {
        match self {
            Bucket::LoginPerIp => limits.login_per_ip,
            Bucket::HandshakePerIp => limits.handshake_per_ip,
            Bucket::HandshakePerUsername => limits.handshake_per_username,
            Bucket::CspReportPerIp => limits.csp_report_per_ip,
        }
    }
}

/// What a limit is counted by: a digest of a client address or of a username.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey([u8; 16]);

impl fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LimitKey({}…)", &self.encoded()[..8])
    }
}

impl LimitKey {
    /// A client address. IPv4 (and IPv4-mapped IPv6) counts per address; IPv6 counts per /64,
    /// the smallest block a site is normally given, so rotating through one's own /64 is no way
    /// around the limit.
    pub fn ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::digest("ip4", &v4.octets()),
            IpAddr::V6(v6) => Self::digest("ip6/64", &v6.octets()[..8]),
        }
    }

    /// The client address as [`crate::http::client_ip::client_ip`] decides it: the socket peer,
    /// or the right-most untrusted `X-Forwarded-For` hop when the peer is a trusted proxy.
    pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Self {
        Self::ip(crate::http::client_ip::client_ip(peer, headers, trusted))
    }

    /// A submitted username, trimmed and lower-cased first, so `Alice`, `alice ` and `ALICE`
    /// share one budget.
    /// The key of the request's client: the socket peer (or, behind trusted proxies, the address
    /// they report). Without a known peer every such request shares one key: limits still hold.
    pub fn of_request(
        peer: Option<std::net::SocketAddr>,
        headers: &HeaderMap,
        trusted: &[IpNet],
    ) -> Self {
        match peer {
            Some(p) => Self::client_ip(p.ip(), headers, trusted),
            None => Self::ip(IpAddr::from([0, 0, 0, 0])),
        }
    }

    pub fn username(name: &str) -> Self {
        Self::digest("user", normalize_username(name).as_bytes())
    }

    fn digest(kind: &str, material: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            b"portcullis/v1/ratelimit/",
            kind.as_bytes(),
            b"\0",
            material,
        ] {
            ctx.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.finish().as_ref()[..16]);
        LimitKey(out)
    }

    /// 22 characters of unpadded base64url.
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    pub(crate) fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

/// Trim and lower-case (Unicode-aware): the form a username is counted under.
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No token left; the next one is there after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

/// The shared backend could not be asked (connection, timeout, cluster down).
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterUnavailable(pub String);

impl From<StoreError> for LimiterUnavailable {
    fn from(e: StoreError) -> Self {
        LimiterUnavailable(e.to_string())
    }
}

/// A rate-limit backend. Implementations must be O(1) per call and safe under concurrent use.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Takes one token from `key`'s bucket (created full on first use). A refusal takes nothing.
    async fn acquire(
        &self,
        bucket: Bucket,
        key: &LimitKey,
        rate: Rate,
    ) -> Result<Decision, LimiterUnavailable>;
}

impl dyn RateLimiter {
    /// The one call handlers make: `Ok(())` to go on, or the error to answer with.
    ///
    /// * over the limit → [`ApiError::TooManyRequests`] (429, `Retry-After` in whole seconds,
    ///   at least 1);
    /// * the shared (Redis) limiter unreachable → [`ApiError::Unavailable`] (503). This fails
    ///   **closed** on purpose: failing open would turn a Redis outage — which an attacker may
    ///   be able to provoke — into unlimited password guessing, and a per-instance fallback would
    ///   quietly multiply every limit by the number of instances. Nothing is lost by refusing:
    ///   the endpoints it guards must write login state or a session to that same Redis, so they
    ///   could not succeed anyway.
    pub async fn check(&self, bucket: Bucket, key: &LimitKey, rate: Rate) -> Result<(), ApiError> {
        match self.acquire(bucket, key, rate).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Refused { retry_after }) => {
                tracing::info!(
                    bucket = bucket.as_str(),
                    key = ?key,
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "rate limit exceeded"
                );
                Err(ApiError::TooManyRequests {
                    retry_after_secs: retry_after_secs(retry_after),
                })
            }
            Err(e) => {
                tracing::error!(bucket = bucket.as_str(), error = %e, "rate limiter unavailable; refusing");
                Err(ApiError::Unavailable)
            }
        }
    }
}

/// `Retry-After` delta-seconds: rounded up (a client that obeys is never refused for being
/// early), at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The limiter that goes with the session store: Redis when the sessions are shared (same
/// server, credentials, TLS and key prefix; its own connection, made lazily), otherwise in this
/// process — the memory and file stores serve a single instance.
pub fn for_store(store: &StoreConfig) -> anyhow::Result<Arc<dyn RateLimiter>> {
    Ok(match store {
        StoreConfig::Redis(cfg) => Arc::new(RedisLimiter::new(cfg.clone())?),
        StoreConfig::Memory | StoreConfig::File(_) => Arc::new(MemoryLimiter::new()),
    })
}
