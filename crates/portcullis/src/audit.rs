//! The audit log: one JSON object per line, separate from the diagnostic logs, for security
//! events (logins, logouts, revocations, refusals). Configured by `[audit]`; off when absent.
//!
//! A line carries `time` (RFC 3339, UTC), `event`, and when known `outcome`/`reason`, `subject`
//! (a pseudonym by default, see [`SubjectMode`]), `session` (a short hash of the store key — never
//! the cookie's ticket), `client_ip`, `user_agent` (≤ 200 characters), `request_id`, `count`.
//! Never a token, a cookie, a password or an anti-CSRF token: the writer only accepts the fields
//! of [`AuditEvent`], none of which can hold one. See `docs/observability.md`.

use std::{
    fmt,
    io::Write as _,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use http::HeaderMap;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    config::{AuditConfig, AuditTarget, SubjectMode},
    store::StoreKey,
};

const MAX_USER_AGENT: usize = 200;

/// Who and where a request came from, as the audit log records it.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl AuditContext {
    /// From the request's headers and socket peer (behind trusted proxies, the address they
    /// report, as for rate limits).
    pub fn new(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpNet]) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        AuditContext {
            client_ip: peer.map(|p| crate::http::client_ip::client_ip(p, headers, trusted)),
            user_agent: text("user-agent").map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
            request_id: text(crate::telemetry::REQUEST_ID),
        }
    }

    pub fn of_request<B>(req: &http::Request<B>, trusted: &[IpNet]) -> Self {
        Self::new(
            req.headers(),
            crate::http::client_ip::peer_addr(req),
            trusted,
        )
    }
}

/// One event. `subject` is given in clear and pseudonymised (or not) by the log.
#[derive(Debug, Default)]
pub struct AuditEvent<'a> {
    pub event: &'static str,
    pub outcome: Option<&'static str>,
    pub reason: Option<&'static str>,
    pub subject: Option<&'a str>,
    pub session: Option<&'a StoreKey>,
    pub count: Option<usize>,
    pub ctx: Option<&'a AuditContext>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

enum Sink {
    Off,
    Stderr,
    Stdout,
    File(Mutex<std::io::BufWriter<std::fs::File>>),
}

/// The audit writer; `event` is the one call. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    sink: Arc<Sink>,
    subject: SubjectMode,
    hash_key: Option<Arc<ring::hmac::Key>>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sink = match *self.sink {
            Sink::Off => "off",
            Sink::Stderr => "stderr",
            Sink::Stdout => "stdout",
            Sink::File(_) => "file",
        };
        f.debug_struct("AuditLog")
            .field("sink", &sink)
            .field("subject", &self.subject)
            .field("keyed", &self.hash_key.is_some())
            .finish()
    }
}

impl AuditLog {
    pub fn disabled() -> Self {
        AuditLog {
            sink: Arc::new(Sink::Off),
            subject: SubjectMode::Hash,
            hash_key: None,
        }
    }

    /// Opens the target (a file is created if needed and appended to).
    pub fn open(config: Option<&AuditConfig>) -> anyhow::Result<Self> {
        let Some(config) = config else {
            return Ok(Self::disabled());
        };
        let sink = match &config.target {
            AuditTarget::Stderr => Sink::Stderr,
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                // Client addresses, user agents and subject pseudonyms: the owner's only, as the
                // session file, whatever the umask (an existing file keeps its mode).
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("audit log {}: {e}", path.display()))?;
                Sink::File(Mutex::new(std::io::BufWriter::new(file)))
            }
        };
        Ok(AuditLog {
            sink: Arc::new(sink),
            subject: config.subject,
            hash_key: config.hash_key.as_ref().map(|k| {
                Arc::new(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    k.expose().as_bytes(),
                ))
            }),
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(*self.sink, Sink::Off)
    }

    /// Writes one line (flushed at once). A write failure is logged, never fatal.
    pub fn event(&self, e: AuditEvent<'_>) {
        if !self.enabled() {
            return;
        }
        let ctx = e.ctx;
        let line = Line {
            time: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: e.event,
            outcome: e.outcome,
            reason: e.reason,
            subject: e.subject.map(|s| self.subject_ref(s)),
            session: e.session.map(session_ref),
            count: e.count,
            client_ip: ctx.and_then(|c| c.client_ip).map(|ip| ip.to_string()),
            user_agent: ctx.and_then(|c| c.user_agent.as_deref()),
            request_id: ctx.and_then(|c| c.request_id.as_deref()),
        };
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return;
        };
        bytes.push(b'\n');
        let written = match &*self.sink {
            Sink::Off => Ok(()),
            Sink::Stderr => std::io::stderr().lock().write_all(&bytes),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes).and_then(|()| out.flush())
            }
            Sink::File(file) => match file.lock() {
                Ok(mut w) => w.write_all(&bytes).and_then(|()| w.flush()),
                Err(_) => Err(std::io::Error::other("audit writer poisoned")),
            },
        };
        if let Err(err) = written {
            tracing::error!(error = %err, event = e.event, "could not write an audit event");
        }
    }

    /// The subject as logged: in clear, or `h:` + 32 hex digits of HMAC-SHA256 under
    /// `audit.hash_key_env`, or `s:` + 32 hex digits of an (unkeyed) SHA-256 without that key.
    fn subject_ref(&self, subject: &str) -> String {
        match (self.subject, &self.hash_key) {
            (SubjectMode::Clear, _) => subject.to_owned(),
            (SubjectMode::Hash, Some(key)) => {
                format!(
                    "h:{}",
                    hex16(ring::hmac::sign(key, subject.as_bytes()).as_ref())
                )
            }
            (SubjectMode::Hash, None) => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(b"portcullis/v1/audit-subject\0");
                ctx.update(subject.as_bytes());
                format!("s:{}", hex16(ctx.finish().as_ref()))
            }
        }
    }
}

/// A short, stable reference to a session: 16 hex digits of SHA-256 of its store key (itself a
/// keyed hash of the ticket), enough to correlate the events of one session.
pub fn session_ref(key: &StoreKey) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"portcullis/v1/audit-session\0");
    ctx.update(key.0.as_bytes());
    hex(&ctx.finish().as_ref()[..8])
}

fn hex16(bytes: &[u8]) -> String {
    hex(&bytes[..16])
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_pseudonymised_by_default() {
        let log = AuditLog::disabled();
        let r = log.subject_ref("alice");
        assert!(r.starts_with("s:") && r.len() == 34 && !r.contains("alice"));
        assert_eq!(r, log.subject_ref("alice"));
        assert_eq!(session_ref(&StoreKey("k".into())).len(), 16);
        let keyed = AuditLog {
            hash_key: Some(Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                b"audit-key",
            ))),
            ..AuditLog::disabled()
        };
        let h = keyed.subject_ref("alice");
        assert!(h.starts_with("h:") && h.len() == 34 && h[2..] != r[2..]);
        let clear = AuditLog {
            subject: SubjectMode::Clear,
            ..AuditLog::disabled()
        };
        assert_eq!(clear.subject_ref("alice"), "alice");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_audit_file_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "portcullis-audit-mode-{}.jsonl",
            crate::crypto::random::token::<6>().expect("rng")
        ));
        let config = AuditConfig {
            target: AuditTarget::File(path.clone()),
            subject: SubjectMode::Hash,
            hash_key: None,
        };
        let log = AuditLog::open(Some(&config)).expect("open");
        log.event(AuditEvent {
            event: "logout",
            ..AuditEvent::default()
        });
        let mode = std::fs::metadata(&path)
            .expect("created")
            .permissions()
            .mode();
        let _ = std::fs::remove_file(&path);
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
