//! `[[routes]]`: the route table (an allowlist of path prefixes → upstream base URLs) and the
//! prefix rules shared with `[bff] prefix`.

use std::time::Duration;

use url::Url;

use super::{RouteConfig, Validator, compose, raw};

/// Below the 5 s keep-alive timeout of Node.js, Apache httpd and uvicorn, the most common short
/// one among upstream servers: such an upstream never closes a connection the pool may hand out.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

impl Validator {
    pub(super) fn routes(&mut self, raw: Vec<raw::RawRoute>, bff_prefix: &str) -> Vec<RouteConfig> {
        let mut out: Vec<RouteConfig> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            if let Err(e) = check_prefix(&r.prefix) {
                self.problem(&format!("{key}.prefix"), e);
            }
            if path_within(&r.prefix, bff_prefix) || path_within(bff_prefix, &r.prefix) {
                self.problem(
                    &format!("{key}.prefix"),
                    format!("overlaps the BFF prefix `{bff_prefix}`"),
                );
            }
            if out.iter().any(|o| o.prefix == r.prefix) {
                self.problem(
                    &format!("{key}.prefix"),
                    format!("`{}` is configured twice", r.prefix),
                );
            }
            let upstream = self.ok(
                &format!("{key}.upstream"),
                Url::parse(&r.upstream)
                    .map_err(|e| format!("`{}` is not an absolute URL ({e})", r.upstream))
                    .and_then(|u| {
                        if !matches!(u.scheme(), "http" | "https") {
                            Err("must be an http or https URL".to_owned())
                        } else if u.query().is_some()
                            || u.fragment().is_some()
                            || !u.username().is_empty()
                        {
                            Err("must not carry a query, fragment or credentials".to_owned())
                        } else {
                            Ok(u)
                        }
                    }),
            );
            let timeout = self.timeout(
                &format!("{key}.timeout"),
                r.timeout,
                Duration::from_secs(30),
            );
            let connect_timeout = self.timeout(
                &format!("{key}.connect_timeout"),
                r.connect_timeout,
                Duration::from_secs(5),
            );
            let idle_timeout = self.timeout(
                &format!("{key}.idle_timeout"),
                r.idle_timeout,
                DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            );
            let policy = self.route_policy(
                &key,
                compose::RawPolicy {
                    methods: r.methods,
                    public: r.public,
                    require_claims: r.require_claims,
                    require_scopes: r.require_scopes,
                    profile: r.profile,
                },
            );
            let ca_pem = r.ca_file.as_ref().and_then(|path| {
                let key = format!("{key}.ca_file");
                if upstream.as_ref().is_some_and(|u| u.scheme() != "https") {
                    self.problem(&key, "only for an https upstream");
                }
                self.ok(&key, read_ca_pem(path))
            });
            if let Some(upstream) = upstream {
                out.push(RouteConfig {
                    prefix: r.prefix,
                    upstream,
                    timeout,
                    connect_timeout,
                    idle_timeout,
                    websocket: r.websocket,
                    ca_pem,
                    policy,
                });
            }
        }
        out
    }
}

/// A PEM file of one or more CA certificates (a private PKI's roots), read and checked now so
/// that a wrong path or file fails the configuration, not the first request.
pub(super) fn read_ca_pem(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: invalid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(pem)
}

/// `true` when `path` is `prefix` or lies below it, segment-wise (`/api/orders` is not within `/api/o`).
pub fn path_within(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

pub(super) fn check_prefix(p: &str) -> Result<(), String> {
    let ok_chars = p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'));
    if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains("//") || !ok_chars {
        return Err(format!(
            "`{p}` must look like `/api/orders`: a leading slash, no trailing slash, plain characters"
        ));
    }
    if p.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("`{p}` must not contain dot segments"));
    }
    Ok(())
}
