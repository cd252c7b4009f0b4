//! `[audit]`, `[admin]` and `[rate_limits]`: what operators see and the brute-force limits.

use std::{net::SocketAddr, time::Duration};

use super::{
    AdminConfig, AuditConfig, AuditTarget, Rate, RateLimits, SubjectMode, Validator, raw, secret,
    units,
};

impl Validator {
    pub(super) fn audit(&mut self, raw: raw::RawAudit) -> Option<AuditConfig> {
        let target = match (raw.target.as_deref(), raw.path) {
            (None | Some("stderr"), None) => Some(AuditTarget::Stderr),
            (Some("stdout"), None) => Some(AuditTarget::Stdout),
            (Some("file"), Some(p)) if !p.is_empty() => {
                self.file_to_create("audit.path", &p).map(AuditTarget::File)
            }
            (Some("file"), _) => {
                self.problem("audit.path", "required with target = \"file\"");
                None
            }
            (None | Some("stderr" | "stdout"), Some(_)) => {
                self.problem("audit.path", "only with target = \"file\"");
                None
            }
            (Some(other), _) => {
                self.problem(
                    "audit.target",
                    format!("`{other}`: use \"stderr\", \"stdout\" or \"file\""),
                );
                None
            }
        };
        let subject = match raw.subject.as_deref() {
            None | Some("hash") => SubjectMode::Hash,
            Some("clear") => SubjectMode::Clear,
            Some(other) => {
                self.problem(
                    "audit.subject",
                    format!("`{other}`: use \"hash\" or \"clear\""),
                );
                SubjectMode::Hash
            }
        };
        let hash_key = match raw.hash_key_env {
            None => None,
            Some(name) => self.ok(
                "audit.hash_key_env",
                secret::load("audit.hash_key_env", Some(&name), "", None),
            ),
        };
        Some(AuditConfig {
            target: target?,
            subject,
            hash_key,
        })
    }

    pub(super) fn admin(&mut self, raw: raw::RawAdmin) -> Option<AdminConfig> {
        let listen = self.ok(
            "admin.listen",
            raw.listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("`{}` is not ip:port ({e})", raw.listen)),
        );
        let token = self.ok(
            "admin.token",
            secret::load("admin.token_env", raw.token_env.as_deref(), "admin.token_file", raw.token_file.as_deref())
                .and_then(|t| {
                    if t.expose().len() >= 32 {
                        Ok(t)
                    } else {
                        Err("the admin token must be at least 32 characters (e.g. `portcullis gen-key`)".into())
                    }
                }),
        );
        Some(AdminConfig {
            listen: listen?,
            token: token?,
        })
    }

    fn rate(&mut self, key: &str, raw: Option<String>, default: Rate) -> Rate {
        match raw {
            None => default,
            Some(s) => self.ok(key, units::parse_rate(&s)).unwrap_or(default),
        }
    }

    pub(super) fn rate_limits(&mut self, raw: raw::RawRateLimits) -> RateLimits {
        let min = Duration::from_secs(60);
        RateLimits {
            login_per_ip: self.rate(
                "rate_limits.login_per_ip",
                raw.login_per_ip,
                Rate {
                    count: 300,
                    per: min,
                },
            ),
            handshake_per_ip: self.rate(
                "rate_limits.handshake_per_ip",
                raw.handshake_per_ip,
                Rate {
                    count: 60,
                    per: min,
                },
            ),
            handshake_per_username: self.rate(
                "rate_limits.handshake_per_username",
                raw.handshake_per_username,
                Rate { count: 5, per: min },
            ),
            csp_report_per_ip: self.rate(
                "rate_limits.csp_report_per_ip",
                raw.csp_report_per_ip,
                Rate {
                    count: 60,
                    per: min,
                },
            ),
        }
    }
}
