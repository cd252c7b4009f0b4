//! `[static_files]` and `[csp]`: how the PWA is hosted (see `crate::pwa`), validated once at
//! start-up. Both have safe defaults; only `static_files.root` is required (when the table is
//! present at all).

use std::path::PathBuf;

use super::{
    Validator,
    raw::{RawCsp, RawStatic},
};

/// The validated `[static_files]` section.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    /// The directory, canonicalised at start-up (every served file must resolve below it).
    pub root: PathBuf,
    /// `index.html` for navigation requests to paths that are not files (default on).
    pub spa_fallback: bool,
    /// URL path of the service worker script: `no-cache` and `Service-Worker-Allowed: /`.
    pub service_worker: String,
    /// Replaces the built-in "hash segment in the file name" rule for immutable caching; matched
    /// against the URL path (e.g. `^/assets/`).
    pub immutable_pattern: Option<regex::Regex>,
    /// Serve `<file>.br` / `<file>.gz` siblings when the request accepts them (default on).
    pub precompressed: bool,
}

/// The validated `[csp]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspConfig {
    /// Off: Portcullis sends no Content-Security-Policy at all and does not rewrite HTML.
    pub enabled: bool,
    /// `Content-Security-Policy-Report-Only` instead of `Content-Security-Policy` on HTML.
    pub report_only: bool,
    /// Also put the nonce on `<style>` and `<link rel=stylesheet>` and into `style-src`.
    pub style_nonce: bool,
    /// `require-trusted-types-for 'script'` (default on).
    pub require_trusted_types: bool,
    /// Policy names for `trusted-types` (empty: `'none'`).
    pub trusted_types: Vec<String>,
    /// `report-uri <bff prefix>/csp-report` (default on).
    pub report: bool,
    /// Also `report-to` + `Reporting-Endpoints` (the Reporting API; default on), sent only when
    /// the public origin is https. Browsers that support it then ignore `report-uri`.
    pub report_to: bool,
    /// Extra sources per directive, in policy order, e.g. `("connect-src", ["https://x"])`.
    pub extra_sources: Vec<(&'static str, Vec<String>)>,
}

impl Default for CspConfig {
    fn default() -> Self {
        CspConfig {
            enabled: true,
            report_only: false,
            style_nonce: false,
            require_trusted_types: true,
            trusted_types: DEFAULT_TRUSTED_TYPES.map(str::to_owned).to_vec(),
            report: true,
            report_to: true,
            extra_sources: Vec::new(),
        }
    }
}

impl CspConfig {
    /// The extra sources configured for `directive` (e.g. `"img-src"`), if any.
    pub fn extra(&self, directive: &str) -> &[String] {
        self.extra_sources
            .iter()
            .find(|(d, _)| *d == directive)
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

/// The app's own policy name and DOMPurify's (it creates `dompurify` when asked for
/// `RETURN_TRUSTED_TYPE`).
pub const DEFAULT_TRUSTED_TYPES: [&str; 2] = ["portcullis", "dompurify"];
pub const DEFAULT_SERVICE_WORKER: &str = "/sw.js";

impl Validator {
    pub(super) fn static_files(&mut self, raw: RawStatic) -> Option<StaticConfig> {
        let root = match std::fs::canonicalize(&raw.root) {
            Ok(p) if p.is_dir() => Some(p),
            Ok(p) => {
                self.problem(
                    "static_files.root",
                    format!("{} is not a directory", p.display()),
                );
                None
            }
            Err(e) => {
                self.problem(
                    "static_files.root",
                    format!("{} is not a directory ({e})", raw.root),
                );
                None
            }
        };
        let service_worker = raw
            .service_worker
            .unwrap_or_else(|| DEFAULT_SERVICE_WORKER.into());
        if !service_worker.starts_with('/')
            || service_worker.ends_with('/')
            || crate::http::hygiene::check_path(&service_worker).is_err()
            || service_worker.contains(['?', '#', '%'])
            || service_worker.split('/').any(|s| s.starts_with('.'))
        {
            self.problem(
                "static_files.service_worker",
                format!("`{service_worker}` must be a plain URL path like \"/sw.js\""),
            );
        }
        let immutable_pattern = raw.immutable_pattern.and_then(|p| {
            self.ok(
                "static_files.immutable_pattern",
                regex::Regex::new(&p).map_err(|e| format!("`{p}` is not a valid regex ({e})")),
            )
        });
        Some(StaticConfig {
            root: root?,
            spa_fallback: raw.spa_fallback.unwrap_or(true),
            service_worker,
            immutable_pattern,
            precompressed: raw.precompressed.unwrap_or(true),
        })
    }

    pub(super) fn csp(&mut self, raw: RawCsp) -> CspConfig {
        let defaults = CspConfig::default();
        let trusted_types = raw.trusted_types.unwrap_or(defaults.trusted_types);
        for name in &trusted_types {
            if !is_trusted_types_name(name) {
                self.problem(
                    "csp.trusted_types",
                    format!(
                        "`{name}` is not a Trusted Types policy name (letters, digits and `-#=_/@.%`) or 'allow-duplicates'"
                    ),
                );
            }
        }
        let mut extra_sources = Vec::new();
        for (key, directive, sources) in [
            ("csp.default_src", "default-src", raw.default_src),
            ("csp.script_src", "script-src", raw.script_src),
            ("csp.style_src", "style-src", raw.style_src),
            ("csp.img_src", "img-src", raw.img_src),
            ("csp.connect_src", "connect-src", raw.connect_src),
            ("csp.font_src", "font-src", raw.font_src),
            ("csp.media_src", "media-src", raw.media_src),
            ("csp.worker_src", "worker-src", raw.worker_src),
            ("csp.manifest_src", "manifest-src", raw.manifest_src),
            ("csp.frame_src", "frame-src", raw.frame_src),
            ("csp.form_action", "form-action", raw.form_action),
        ] {
            for s in &sources {
                if let Err(e) = check_source(s) {
                    self.problem(key, e);
                }
            }
            if !sources.is_empty() {
                extra_sources.push((directive, sources));
            }
        }
        CspConfig {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            report_only: raw.report_only.unwrap_or(defaults.report_only),
            style_nonce: raw.style_nonce.unwrap_or(defaults.style_nonce),
            require_trusted_types: raw
                .require_trusted_types
                .unwrap_or(defaults.require_trusted_types),
            trusted_types,
            report: raw.report.unwrap_or(defaults.report),
            report_to: raw.report_to.unwrap_or(defaults.report_to),
            extra_sources,
        }
    }
}

/// `tt-policy-name = 1*( ALPHA / DIGIT / "-" / "#" / "=" / "_" / "/" / "@" / "." / "%")`, or the
/// `'allow-duplicates'` keyword.
fn is_trusted_types_name(s: &str) -> bool {
    s == "'allow-duplicates'"
        || (!s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'#' | b'=' | b'_' | b'/' | b'@' | b'.' | b'%')
            }))
}

/// One source expression: visible ASCII, no separator a policy could be split or extended with,
/// and never a nonce (Portcullis's fresh nonce is the only one).
fn check_source(s: &str) -> Result<(), String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains([';', ',']) {
        return Err(format!(
            "`{s}` is not a single source expression (no spaces, `;` or `,`)"
        ));
    }
    if s.to_ascii_lowercase().starts_with("'nonce-") {
        return Err(format!(
            "`{s}`: nonces are generated per response by Portcullis, never configured"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_expressions_are_checked() {
        for ok in [
            "'self'",
            "https://cdn.example.com",
            "data:",
            "'sha256-abc+/='",
            "'unsafe-eval'",
        ] {
            assert!(check_source(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x;script-src *",
            "a,b",
            "'nonce-abc'",
            "'NONCE-abc'",
            "é",
        ] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_types_names() {
        assert!(is_trusted_types_name("portcullis"));
        assert!(is_trusted_types_name("my-lib#1"));
        assert!(is_trusted_types_name("'allow-duplicates'"));
        assert!(!is_trusted_types_name("a b"));
        assert!(!is_trusted_types_name("'none';"));
        assert!(!is_trusted_types_name(""));
    }
}
