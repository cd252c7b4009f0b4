//! The Content-Security-Policy: built once from `[csp]`, with a slot for the per-response nonce.
//!
//! The HTML policy is a "strict CSP": scripts run only with this response's nonce (or when a
//! nonce'd script loads them, `'strict-dynamic'`), no plugins, no `<base>`, no framing, forms post
//! only to this origin, and DOM XSS sinks take only Trusted Types from allow-listed policies.
//! Every other response the gateway produces (API JSON, problems, images, ...) gets
//! [`NON_DOCUMENT_POLICY`] unless it already carries a policy (see [`super::FallbackCsp`]).

use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderName, HeaderValue};

use crate::{
    config::CspConfig,
    crypto::random::{self, RandomError},
};

/// For everything that is not one of the PWA's HTML documents or scripts: nothing may load, the
/// response may not be framed, and when opened as a document (an SVG, a JSON error page) it is
/// sandboxed: no script, no same-origin access.
pub const NON_DOCUMENT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// The `report-to` group name, defined by the `Reporting-Endpoints` header sent alongside.
pub const REPORT_GROUP: &str = "csp-endpoint";

/// Stands for the nonce in [`Csp::template`]; source expressions are visible ASCII, so it never
/// occurs otherwise.
const NONCE_SLOT: char = '\0';

#[derive(Debug, Clone)]
pub struct Csp {
    pub enabled: bool,
    pub style_nonce: bool,
    header: HeaderName,
    template: String,
    reporting_endpoints: Option<HeaderValue>,
}

impl Csp {
    /// `origin` is the public origin (the `Reporting-Endpoints` URL is absolute).
    pub fn new(cfg: &CspConfig, bff_prefix: &str, origin: &str) -> Csp {
        let header = HeaderName::from_static(if cfg.report_only {
            "content-security-policy-report-only"
        } else {
            "content-security-policy"
        });
        let report_path = format!("{bff_prefix}/csp-report");
        let nonce = format!("'nonce-{NONCE_SLOT}'");
        let mut d: Vec<(&str, Vec<String>)> = Vec::new();
        let with = |base: &[&str], directive: &str| {
            base.iter()
                .map(|s| (*s).to_owned())
                .chain(cfg.extra(directive).iter().cloned())
                .collect::<Vec<_>>()
        };
        d.push(("default-src", with(&["'self'"], "default-src")));
        let mut script = vec![nonce.clone(), "'strict-dynamic'".to_owned()];
        script.extend(cfg.extra("script-src").iter().cloned());
        d.push(("script-src", script));
        let mut style = vec!["'self'".to_owned()];
        if cfg.style_nonce {
            style.push(nonce);
        }
        style.extend(cfg.extra("style-src").iter().cloned());
        d.push(("style-src", style));
        // Directives that fall back to default-src 'self' appear only when they add sources.
        for directive in [
            "img-src",
            "connect-src",
            "font-src",
            "media-src",
            "manifest-src",
            "frame-src",
        ] {
            if !cfg.extra(directive).is_empty() {
                d.push((directive, with(&["'self'"], directive)));
            }
        }
        // Always explicit: worker-src would otherwise fall back to script-src, where
        // 'strict-dynamic' ignores 'self' and a nonce cannot apply to `new Worker(url)` or
        // `navigator.serviceWorker.register(url)`.
        d.push(("worker-src", with(&["'self'"], "worker-src")));
        d.push(("object-src", vec!["'none'".into()]));
        d.push(("base-uri", vec!["'none'".into()]));
        d.push(("frame-ancestors", vec!["'none'".into()]));
        d.push(("form-action", with(&["'self'"], "form-action")));
        if cfg.require_trusted_types {
            d.push(("require-trusted-types-for", vec!["'script'".into()]));
        }
        d.push((
            "trusted-types",
            if cfg.trusted_types.is_empty() {
                vec!["'none'".into()]
            } else {
                cfg.trusted_types.clone()
            },
        ));
        // Chromium ignores `Reporting-Endpoints` on plain-HTTP responses (localhost included),
        // and a policy with `report-to` has its `report-uri` ignored: over http the pair would
        // silence every report. So `report-to` only for an https public origin.
        let report_to = cfg.report && cfg.report_to && origin.starts_with("https://");
        if cfg.report {
            d.push(("report-uri", vec![report_path.clone()]));
        }
        if report_to {
            d.push(("report-to", vec![REPORT_GROUP.into()]));
        }
        let template = d
            .iter()
            .map(|(name, sources)| format!("{name} {}", sources.join(" ")))
            .collect::<Vec<_>>()
            .join("; ");
        let reporting_endpoints = report_to
            .then(|| {
                HeaderValue::from_str(&format!("{REPORT_GROUP}=\"{origin}{report_path}\"")).ok()
            })
            .flatten();
        Csp {
            enabled: cfg.enabled,
            style_nonce: cfg.style_nonce,
            header,
            template,
            reporting_endpoints,
        }
    }

    /// 144 bits from the OS CSPRNG, standard base64 (24 characters, no padding): valid in every
    /// CSP level's nonce grammar and in an HTML attribute.
    pub fn nonce() -> Result<String, RandomError> {
        Ok(STANDARD.encode(random::bytes::<18>()?))
    }

    /// `Content-Security-Policy` (or `-Report-Only`) with `nonce` filled in.
    pub fn header(&self, nonce: &str) -> (HeaderName, HeaderValue) {
        let value = self.template.replace(NONCE_SLOT, nonce);
        (
            self.header.clone(),
            // The template is visible ASCII and the nonce base64: always a valid value. Were it
            // not, fail closed with a policy that lets nothing run.
            HeaderValue::from_str(&value)
                .unwrap_or_else(|_| HeaderValue::from_static(NON_DOCUMENT_POLICY)),
        )
    }

    /// `Reporting-Endpoints: csp-endpoint="…"`, when Reporting API reports are on.
    pub fn reporting_endpoints(&self) -> Option<&HeaderValue> {
        self.reporting_endpoints.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cfg: &CspConfig) -> String {
        let csp = Csp::new(cfg, "/bff", "https://app.example");
        csp.header("N0NCE").1.to_str().expect("ascii").to_owned()
    }

    #[test]
    fn default_policy_is_strict() {
        let p = policy(&CspConfig::default());
        assert_eq!(
            p,
            "default-src 'self'; script-src 'nonce-N0NCE' 'strict-dynamic'; style-src 'self'; \
             worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
             form-action 'self'; require-trusted-types-for 'script'; \
             trusted-types portcullis dompurify; report-uri /bff/csp-report; report-to csp-endpoint"
        );
        let csp = Csp::new(&CspConfig::default(), "/bff", "https://app.example");
        assert_eq!(csp.header("x").0.as_str(), "content-security-policy");
        assert_eq!(
            csp.reporting_endpoints().expect("on"),
            "csp-endpoint=\"https://app.example/bff/csp-report\""
        );
    }

    #[test]
    fn options_change_the_policy() {
        let cfg = CspConfig {
            report_only: true,
            style_nonce: true,
            require_trusted_types: false,
            trusted_types: vec![],
            report: false,
            extra_sources: vec![
                ("connect-src", vec!["https://api.example".into()]),
                ("script-src", vec!["https:".into()]),
            ],
            ..CspConfig::default()
        };
        let csp = Csp::new(&cfg, "/bff", "https://app.example");
        let (name, value) = csp.header("N");
        assert_eq!(name.as_str(), "content-security-policy-report-only");
        let p = value.to_str().expect("ascii");
        assert!(
            p.contains("script-src 'nonce-N' 'strict-dynamic' https:;"),
            "{p}"
        );
        assert!(p.contains("style-src 'self' 'nonce-N';"), "{p}");
        assert!(p.contains("connect-src 'self' https://api.example;"), "{p}");
        assert!(p.contains("trusted-types 'none'"), "{p}");
        assert!(!p.contains("require-trusted-types-for"), "{p}");
        assert!(!p.contains("report-"), "{p}");
        assert!(csp.reporting_endpoints().is_none());
    }

    #[test]
    fn report_to_only_over_https() {
        let csp = Csp::new(&CspConfig::default(), "/bff", "http://localhost:8080");
        let p = csp.header("N").1.to_str().expect("ascii").to_owned();
        assert!(p.ends_with("; report-uri /bff/csp-report"), "{p}");
        assert!(csp.reporting_endpoints().is_none());
    }

    #[test]
    fn report_uri_alone() {
        let cfg = CspConfig {
            report_to: false,
            ..CspConfig::default()
        };
        let p = policy(&cfg);
        assert!(p.ends_with("; report-uri /bff/csp-report"), "{p}");
        assert!(!p.contains("report-to"), "{p}");
        let csp = Csp::new(&cfg, "/bff", "https://app.example");
        assert!(csp.reporting_endpoints().is_none());
    }

    #[test]
    fn nonces_are_long_and_fresh() {
        let a = Csp::nonce().expect("rng");
        let b = Csp::nonce().expect("rng");
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        );
    }
}
