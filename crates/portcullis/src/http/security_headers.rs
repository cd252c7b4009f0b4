//! Hardening headers on every response the gateway produces: its own, errors (problem+json from
//! any layer), redirects, 404s, probes and proxied upstream responses alike. The set comes from
//! `[headers]` and is computed once, when the stack is built; a request only copies it.
//!
//! The gateway owns these headers: a value an upstream sent for one of them is replaced, so a
//! microservice cannot weaken the policy of the origin it is served under.
//!
//! | Header | Default | Config |
//! |---|---|---|
//! | `Strict-Transport-Security` | `max-age=63072000; includeSubDomains` when the public origin is https | `hsts`, `hsts_max_age`, `hsts_include_subdomains`, `hsts_preload` |
//! | `X-Content-Type-Options` | `nosniff` | always |
//! | `X-Frame-Options` | `DENY` (CSP `frame-ancestors` for current browsers) | always |
//! | `Referrer-Policy` | `no-referrer` | `referrer_policy` |
//! | `Permissions-Policy` | sensors, camera, microphone, payment, USB… denied | `permissions_policy` |
//! | `Cross-Origin-Opener-Policy` | `same-origin` | `cross_origin_opener_policy` |
//! | `Cross-Origin-Resource-Policy` | `same-origin` | `cross_origin_resource_policy` |
//!
//! `Clear-Site-Data` is not here: it goes on the logout response only ([`clear_site_data`]).

use std::sync::Arc;

use axum::{extract::Request, response::Response};
use http::{HeaderName, HeaderValue};

use super::around::{Around, Before};
use crate::config::HeadersConfig;

/// The fixed set, computed once at start-up.
#[derive(Debug, Clone)]
pub struct SecurityHeaders(Arc<[(HeaderName, HeaderValue)]>);

impl SecurityHeaders {
    pub fn new(config: &HeadersConfig) -> Self {
        let mut v = vec![
            (
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ];
        let mut configured = |name: &'static str, value: &str| {
            if value.is_empty() {
                return;
            }
            // The config validator only lets header-safe values through.
            match HeaderValue::from_str(value) {
                Ok(hv) => v.push((HeaderName::from_static(name), hv)),
                Err(_) => tracing::error!(header = name, "invalid header value; not sent"),
            }
        };
        configured("referrer-policy", &config.referrer_policy);
        configured("permissions-policy", &config.permissions_policy);
        configured(
            "cross-origin-opener-policy",
            &config.cross_origin_opener_policy,
        );
        configured(
            "cross-origin-resource-policy",
            &config.cross_origin_resource_policy,
        );
        if let Some(hsts) = &config.hsts {
            configured("strict-transport-security", &hsts.header_value());
        }
        SecurityHeaders(v.into())
    }

    /// The headers in the order they are set.
    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }
}

/// The layer: sets the headers on every response, overwriting any upstream value.
impl Around for SecurityHeaders {
    type Carry = ();

    fn before(&self, _: &mut Request) -> Before<()> {
        Before::Continue(())
    }

    fn after(&self, (): (), resp: &mut Response) {
        let h = resp.headers_mut();
        // One growth of the map, not one per insert (an upstream's response has a few headers).
        h.reserve(self.0.len());
        for (name, value) in self.0.iter() {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// `Clear-Site-Data` for a successful logout, e.g. `"cache", "storage"`; `None` when the list
/// is empty (disabled).
pub fn clear_site_data(types: &[String]) -> Option<HeaderValue> {
    if types.is_empty() {
        return None;
    }
    let value = types
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Hsts;

    fn names(h: &SecurityHeaders) -> Vec<&str> {
        h.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn defaults_cover_every_header() {
        let h = SecurityHeaders::new(&HeadersConfig::default());
        assert_eq!(
            names(&h),
            [
                "x-content-type-options",
                "x-frame-options",
                "referrer-policy",
                "permissions-policy",
                "cross-origin-opener-policy",
                "cross-origin-resource-policy",
                "strict-transport-security",
            ]
        );
    }

    #[test]
    fn hsts_off_and_empty_permissions_policy_are_omitted() {
        let h = SecurityHeaders::new(&HeadersConfig {
            hsts: None,
            permissions_policy: String::new(),
            ..HeadersConfig::default()
        });
        assert!(!names(&h).contains(&"strict-transport-security"));
        assert!(!names(&h).contains(&"permissions-policy"));
        assert!(names(&h).contains(&"x-content-type-options"));
        let preload = SecurityHeaders::new(&HeadersConfig {
            hsts: Some(Hsts {
                max_age: std::time::Duration::from_secs(31_536_000),
                include_subdomains: true,
                preload: true,
            }),
            ..HeadersConfig::default()
        });
        let sts = preload
            .iter()
            .find(|(n, _)| n == "strict-transport-security")
            .map(|(_, v)| v.to_str().expect("ascii"));
        assert_eq!(sts, Some("max-age=31536000; includeSubDomains; preload"));
    }

    #[test]
    fn clear_site_data_value() {
        assert_eq!(
            clear_site_data(&["cache".into(), "storage".into()]).as_ref(),
            Some(&HeaderValue::from_static("\"cache\", \"storage\""))
        );
        assert_eq!(clear_site_data(&[]), None);
    }
}
