//! `[headers]`: the hardening headers sent on every response, validated once at start-up.
//!
//! Every key has a safe default, so the section is optional. Values browsers would silently
//! ignore (a misspelt Referrer-Policy token, Feature-Policy syntax in `permissions_policy`, an
//! HSTS preload request the preload list would refuse) are configuration errors here instead.

use std::time::Duration;

use super::{PublicOrigin, Validator, raw::RawHeaders};

/// The validated `[headers]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersConfig {
    /// `Strict-Transport-Security`, resolved: `None` when not sent.
    pub hsts: Option<Hsts>,
    /// `Referrer-Policy` (one token, or a comma-separated fallback list).
    pub referrer_policy: String,
    /// `Permissions-Policy`; empty = not sent.
    pub permissions_policy: String,
    pub cross_origin_opener_policy: String,
    pub cross_origin_resource_policy: String,
    /// `Clear-Site-Data` types sent with a successful `POST /bff/logout`; empty = not sent.
    pub clear_site_data_on_logout: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Hsts {
    /// The header value, e.g. `max-age=63072000; includeSubDomains`.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// Two years, the value the HSTS preload list recommends.
pub const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
const ONE_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Powerful features a BFF-hosted PWA rarely needs, all denied to the page and every frame.
/// Only names Chromium recognises (an unknown name costs a console error on every page), so no
/// `interest-cohort` (FLoC, withdrawn) and no `browsing-topics` (being retired). Features an app
/// plausibly uses (fullscreen, clipboard, WebAuthn `publickey-credentials-*`, web-share) are left
/// at the browser's default (self only).
pub const DEFAULT_PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), display-capture=(), \
geolocation=(), gyroscope=(), hid=(), magnetometer=(), microphone=(), midi=(), payment=(), \
serial=(), usb=()";

/// The tokens of the Referrer Policy spec (W3C, section 3).
pub const REFERRER_POLICIES: [&str; 8] = [
    "no-referrer",
    "no-referrer-when-downgrade",
    "same-origin",
    "origin",
    "strict-origin",
    "origin-when-cross-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

/// `Cross-Origin-Opener-Policy` values (HTML standard).
pub const COOP_VALUES: [&str; 4] = [
    "same-origin",
    "same-origin-allow-popups",
    "noopener-allow-popups",
    "unsafe-none",
];

/// `Cross-Origin-Resource-Policy` values (Fetch standard).
pub const CORP_VALUES: [&str; 3] = ["same-origin", "same-site", "cross-origin"];

/// `Clear-Site-Data` types (W3C Clear Site Data, plus Chromium's cache-partition extras).
pub const CLEAR_SITE_DATA_TYPES: [&str; 8] = [
    "cache",
    "cookies",
    "storage",
    "executionContexts",
    "clientHints",
    "prefetchCache",
    "prerenderCache",
    "*",
];

impl Default for HeadersConfig {
    /// The defaults for an `https` public origin.
    fn default() -> Self {
        HeadersConfig {
            hsts: Some(Hsts {
                max_age: DEFAULT_HSTS_MAX_AGE,
                include_subdomains: true,
                preload: false,
            }),
            referrer_policy: "no-referrer".into(),
            permissions_policy: DEFAULT_PERMISSIONS_POLICY.into(),
            cross_origin_opener_policy: "same-origin".into(),
            cross_origin_resource_policy: "same-origin".into(),
            clear_site_data_on_logout: vec!["cache".into(), "storage".into()],
        }
    }
}

impl Validator {
    pub(super) fn headers(
        &mut self,
        raw: RawHeaders,
        origin: Option<&PublicOrigin>,
    ) -> HeadersConfig {
        let defaults = HeadersConfig::default();
        let https = origin.is_some_and(|o| o.scheme == "https");
        let enabled = match raw.hsts.as_deref() {
            None | Some("auto") => https,
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                self.problem(
                    "headers.hsts",
                    format!("`{other}`: use \"auto\" (on when public_origin is https), \"on\" or \"off\""),
                );
                https
            }
        };
        let max_age = self.duration(
            "headers.hsts_max_age",
            raw.hsts_max_age,
            DEFAULT_HSTS_MAX_AGE,
        );
        let include_subdomains = raw.hsts_include_subdomains.unwrap_or(true);
        let preload = raw.hsts_preload.unwrap_or(false);
        if preload {
            if raw.hsts.as_deref() == Some("off") {
                self.problem("headers.hsts_preload", "needs HSTS (hsts is \"off\")");
            }
            if max_age < ONE_YEAR || !include_subdomains {
                self.problem(
                    "headers.hsts_preload",
                    "the preload list requires hsts_max_age of at least 1 year and hsts_include_subdomains = true",
                );
            }
        }
        let hsts = enabled.then_some(Hsts {
            max_age,
            include_subdomains,
            preload,
        });

        let referrer_policy = match raw.referrer_policy {
            None => defaults.referrer_policy,
            Some(p) => {
                let tokens: Vec<&str> = p.split(',').map(str::trim).collect();
                if let Some(bad) = tokens.iter().find(|t| !REFERRER_POLICIES.contains(t)) {
                    self.problem(
                        "headers.referrer_policy",
                        format!(
                            "`{bad}` is not a Referrer-Policy token (one of {})",
                            REFERRER_POLICIES.join(", ")
                        ),
                    );
                }
                tokens.join(", ")
            }
        };

        let permissions_policy = match raw.permissions_policy {
            None => defaults.permissions_policy,
            Some(p) => {
                let p = p.trim().to_owned();
                if !p.is_empty()
                    && let Err(e) = check_permissions_policy(&p)
                {
                    self.problem("headers.permissions_policy", e);
                }
                p
            }
        };

        let cross_origin_opener_policy = self.one_of(
            "headers.cross_origin_opener_policy",
            raw.cross_origin_opener_policy,
            &COOP_VALUES,
            defaults.cross_origin_opener_policy,
        );
        let cross_origin_resource_policy = self.one_of(
            "headers.cross_origin_resource_policy",
            raw.cross_origin_resource_policy,
            &CORP_VALUES,
            defaults.cross_origin_resource_policy,
        );

        let clear_site_data_on_logout = match raw.clear_site_data_on_logout {
            None => defaults.clear_site_data_on_logout,
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    if !CLEAR_SITE_DATA_TYPES.contains(&t.as_str()) {
                        self.problem(
                            "headers.clear_site_data_on_logout",
                            format!(
                                "`{t}` is not a Clear-Site-Data type (one of {})",
                                CLEAR_SITE_DATA_TYPES.join(", ")
                            ),
                        );
                    } else if types[..i].contains(t) {
                        self.problem(
                            "headers.clear_site_data_on_logout",
                            format!("`{t}` is listed twice"),
                        );
                    }
                }
                types
            }
        };

        HeadersConfig {
            hsts,
            referrer_policy,
            permissions_policy,
            cross_origin_opener_policy,
            cross_origin_resource_policy,
            clear_site_data_on_logout,
        }
    }

    fn one_of(
        &mut self,
        key: &str,
        raw: Option<String>,
        allowed: &[&str],
        default: String,
    ) -> String {
        match raw {
            None => default,
            Some(v) if allowed.contains(&v.as_str()) => v,
            Some(v) => {
                self.problem(key, format!("`{v}`: use one of {}", allowed.join(", ")));
                default
            }
        }
    }
}

/// A Permissions-Policy header is a Structured Fields dictionary (RFC 8941) of
/// `feature=allowlist`, the allowlist `*`, `self`, `src`, a quoted origin or an inner list of
/// those, e.g. `camera=(), geolocation=(self "https://maps.example")`. Checked so that the older
/// Feature-Policy syntax (`camera 'none'`), which browsers drop without a word, is an error.
pub fn check_permissions_policy(p: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for member in p.split(',').map(str::trim) {
        let (name, value) = member.split_once('=').ok_or_else(|| {
            format!("`{member}` is not `feature=allowlist` (e.g. `camera=()`; Feature-Policy syntax is not understood)")
        })?;
        let is_key = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !is_key {
            return Err(format!("`{name}` is not a feature name"));
        }
        if seen.contains(&name) {
            return Err(format!("`{name}` is listed twice"));
        }
        seen.push(name);
        // Parameters (`;report-to=endpoint`) are allowed after the allowlist.
        let mut parts = value.split(';');
        let allowlist = parts.next().unwrap_or("").trim();
        for param in parts {
            let ok = param.trim().split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                    && !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            if !ok {
                return Err(format!("`{member}`: bad parameter `{param}`"));
            }
        }
        let items = match allowlist
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
        {
            Some(inner) => inner.split(' ').filter(|s| !s.is_empty()).collect(),
            None => vec![allowlist],
        };
        for item in items {
            let origin = item
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .is_some_and(|o| {
                    url::Url::parse(o).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
                        && !o.contains(['"', '\\', ' '])
                });
            if !(origin || matches!(item, "*" | "self" | "src")) {
                return Err(format!(
                    "`{member}`: `{item}` is not `*`, `self`, `src` or a quoted origin (write `()` to deny)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(scheme: &str) -> PublicOrigin {
        PublicOrigin {
            origin: format!("{scheme}://app.example"),
            scheme: scheme.into(),
            host: "app.example".into(),
        }
    }

    fn validate(raw: RawHeaders, scheme: &str) -> Result<HeadersConfig, Vec<String>> {
        let mut v = Validator::default();
        let h = v.headers(raw, Some(&origin(scheme)));
        if v.problems.is_empty() {
            Ok(h)
        } else {
            Err(v.problems.iter().map(|p| p.to_string()).collect())
        }
    }

    #[test]
    fn defaults_are_safe() {
        let h = validate(RawHeaders::default(), "https").expect("valid");
        assert_eq!(h, HeadersConfig::default());
        assert_eq!(
            h.hsts.map(|h| h.header_value()).as_deref(),
            Some("max-age=63072000; includeSubDomains")
        );
        assert!(!h.permissions_policy.contains("interest-cohort"));
        check_permissions_policy(DEFAULT_PERMISSIONS_POLICY).expect("default parses");
        assert_eq!(h.clear_site_data_on_logout, ["cache", "storage"]);
        // `auto` over plain http: no HSTS (browsers ignore it there anyway).
        assert_eq!(
            validate(RawHeaders::default(), "http").expect("valid").hsts,
            None
        );
    }

    #[test]
    fn hsts_modes_and_preload() {
        let raw = |hsts: &str| RawHeaders {
            hsts: Some(hsts.into()),
            ..RawHeaders::default()
        };
        assert!(validate(raw("on"), "http").expect("on").hsts.is_some());
        assert!(validate(raw("off"), "https").expect("off").hsts.is_none());
        assert!(validate(raw("yes"), "https").is_err());
        let preload = RawHeaders {
            hsts_preload: Some(true),
            hsts_max_age: Some("365days".into()),
            ..RawHeaders::default()
        };
        assert_eq!(
            validate(preload, "https")
                .expect("preload")
                .hsts
                .map(|h| h.header_value())
                .as_deref(),
            Some("max-age=31536000; includeSubDomains; preload")
        );
        for bad in [
            RawHeaders {
                hsts_preload: Some(true),
                hsts_include_subdomains: Some(false),
                ..RawHeaders::default()
            },
            RawHeaders {
                hsts_preload: Some(true),
                hsts_max_age: Some("30days".into()),
                ..RawHeaders::default()
            },
            RawHeaders {
                hsts_preload: Some(true),
                hsts: Some("off".into()),
                ..RawHeaders::default()
            },
        ] {
            let e = validate(bad, "https").expect_err("preload rules");
            assert!(
                e.iter().all(|p| p.starts_with("headers.hsts_preload")),
                "{e:?}"
            );
        }
        let e = validate(
            RawHeaders {
                hsts_max_age: Some("forever".into()),
                ..RawHeaders::default()
            },
            "https",
        )
        .expect_err("bad duration");
        assert!(e[0].starts_with("headers.hsts_max_age"), "{e:?}");
    }

    #[test]
    fn referrer_policy_tokens_are_checked() {
        let rp = |p: &str| {
            validate(
                RawHeaders {
                    referrer_policy: Some(p.into()),
                    ..RawHeaders::default()
                },
                "https",
            )
            .map(|h| h.referrer_policy)
        };
        assert_eq!(rp("same-origin").as_deref(), Ok("same-origin"));
        assert_eq!(
            rp("no-referrer,strict-origin-when-cross-origin").as_deref(),
            Ok("no-referrer, strict-origin-when-cross-origin")
        );
        assert!(rp("none").is_err());
        assert!(rp("No-Referrer").is_err());
        assert!(rp("").is_err());
    }

    #[test]
    fn permissions_policy_syntax() {
        for ok in [
            "camera=()",
            "camera=(), geolocation=(self \"https://maps.example\")",
            "fullscreen=*",
            "fullscreen=self",
            "autoplay=(self);report-to=main",
        ] {
            check_permissions_policy(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "camera 'none'",
            "camera=('none')",
            "Camera=()",
            "camera=(), camera=(self)",
            "camera=(self",
            "geolocation=(https://maps.example)",
            "camera=();report-to",
        ] {
            assert!(check_permissions_policy(bad).is_err(), "{bad}");
        }
        // Empty: the header is not sent.
        let h = validate(
            RawHeaders {
                permissions_policy: Some(String::new()),
                ..RawHeaders::default()
            },
            "https",
        )
        .expect("empty disables");
        assert_eq!(h.permissions_policy, "");
    }

    #[test]
    fn coop_corp_and_clear_site_data() {
        let h = validate(
            RawHeaders {
                cross_origin_opener_policy: Some("same-origin-allow-popups".into()),
                cross_origin_resource_policy: Some("same-site".into()),
                clear_site_data_on_logout: Some(vec![]),
                ..RawHeaders::default()
            },
            "https",
        )
        .expect("valid");
        assert_eq!(h.cross_origin_opener_policy, "same-origin-allow-popups");
        assert_eq!(h.cross_origin_resource_policy, "same-site");
        assert!(h.clear_site_data_on_logout.is_empty());
        let e = validate(
            RawHeaders {
                cross_origin_opener_policy: Some("deny".into()),
                cross_origin_resource_policy: Some("none".into()),
                clear_site_data_on_logout: Some(vec![
                    "cache".into(),
                    "Cache".into(),
                    "cache".into(),
                ]),
                ..RawHeaders::default()
            },
            "https",
        )
        .expect_err("invalid");
        assert_eq!(e.len(), 4, "{e:?}");
    }
}
