//! Hosting the PWA: its static files (for paths no route claims) and its Content-Security-Policy.
//!
//! - **Files** below `static_files.root` (canonicalised at start-up), `GET`/`HEAD` only (else 405).
//!   No directory listing, no dotfiles or dot directories, no escape from the root: the path is
//!   decoded and checked segment by segment ([`path::SafePath`]) and the resolved file, symlinks
//!   followed, must still lie below the root.
//! - **Caching**: strong `ETag` (SHA-256 of the bytes, cached per file version) with
//!   `If-None-Match` → 304; a year and `immutable` for fingerprinted names; `no-cache` for
//!   everything else, HTML, the manifest and the service worker included.
//! - **Precompressed** `<file>.br` / `<file>.gz` siblings when `Accept-Encoding` allows, with
//!   `Content-Encoding` and `Vary: Accept-Encoding`.
//! - **SPA fallback**: `index.html` for a navigation (see [`is_navigation`]) to an extension-less
//!   path that is no file and not under the BFF prefix, a route prefix or `/api`; else 404.
//! - **CSP**: every HTML response is rewritten with a fresh nonce on its scripts ([`rewrite`]) and
//!   sent with the matching policy ([`csp`]), `Cache-Control: no-cache, private` and no ETag, so
//!   a nonce is never served twice. Other responses get [`csp::NON_DOCUMENT_POLICY`] from
//!   [`FallbackCsp`], except scripts (a worker script's policy would govern the worker).

pub mod csp;
mod files;
pub mod path;
pub mod rewrite;

use std::path::{Path, PathBuf};

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header, request::Parts};

use crate::{
    config::{Config, StaticConfig},
    http::{
        around::{Around, Before},
        problem::ApiError,
    },
};
use csp::Csp;
use files::{CacheClass, Coding, ETags};
use path::SafePath;

/// Largest HTML file rewritten in memory; a bigger one is a 500 (an app shell is a few KiB).
const MAX_HTML: u64 = 8 << 20;

/// Marks a response whose Content-Security-Policy the PWA module decided (including "none"), so
/// [`FallbackCsp`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct CspDecided;

/// The PWA host, built once at start-up.
#[derive(Debug)]
pub struct Pwa {
    files: Option<StaticConfig>,
    csp: Csp,
    /// The BFF prefix, every route prefix and `/api`, as segments: never static files, never the
    /// fallback. Compared with the *decoded* path, so `/%61pi/x` or `/b%66f/session` (which no
    /// route claims, as routing sees the raw path) cannot reach a file or the app shell there.
    reserved: Vec<Vec<String>>,
    etags: ETags,
}

impl Pwa {
    pub fn new(config: &Config) -> Pwa {
        let reserved = [config.bff_prefix.as_str(), "/api"]
            .into_iter()
            .chain(config.routes.iter().map(|r| r.prefix.as_str()))
            .map(|prefix| {
                prefix
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        Pwa {
            files: config.static_files.clone(),
            csp: Csp::new(
                &config.csp,
                &config.bff_prefix,
                &config.server.public_origin.origin,
            ),
            reserved,
            etags: ETags::default(),
        }
    }

    /// Answers a request no route claimed: a file, the SPA fallback, or a problem.
    pub async fn serve(&self, req: Request) -> Response {
        // The body is never read; the parts (unlike the body) can be borrowed across awaits.
        let (req, _body) = req.into_parts();
        match self.try_serve(&req).await {
            Ok(r) => r,
            Err(ApiError::MethodNotAllowed) => {
                let mut r = ApiError::MethodNotAllowed.into_response();
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
            Err(e) => e.into_response(),
        }
    }

    async fn try_serve(&self, req: &Parts) -> Result<Response, ApiError> {
        let Some(cfg) = &self.files else {
            return Err(ApiError::NotFound);
        };
        if !matches!(req.method, Method::GET | Method::HEAD) {
            return Err(ApiError::MethodNotAllowed);
        }
        let url_path = req.uri.path();
        let Some(safe) = SafePath::parse(url_path) else {
            tracing::debug!("static path refused");
            return Err(ApiError::NotFound);
        };
        if self.reserved.iter().any(|p| safe.segments.starts_with(p)) {
            return Err(ApiError::NotFound);
        }
        match self.lookup(cfg, &safe.join_to(&cfg.root)).await {
            Some(Found::File(file, meta)) if !safe.trailing_slash => {
                return self.file(cfg, req, url_path, &file, &meta).await;
            }
            Some(Found::Dir(dir)) => {
                if let Some(Found::File(index, meta)) =
                    self.lookup(cfg, &dir.join("index.html")).await
                {
                    if safe.trailing_slash {
                        return self.file(cfg, req, url_path, &index, &meta).await;
                    }
                    // `/docs` → `/docs/`, so the page's relative URLs resolve below it. The path
                    // has no empty segment, so the Location cannot start with `//`.
                    let location = match req.uri.query() {
                        Some(q) => format!("{url_path}/?{q}"),
                        None => format!("{url_path}/"),
                    };
                    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
                    r.headers_mut().insert(
                        header::LOCATION,
                        HeaderValue::from_str(&location).map_err(|_| ApiError::NotFound)?,
                    );
                    return Ok(r);
                }
            }
            // An escape attempt (or a dotfile behind a symlink) is not a page of the app.
            Some(Found::Refused) => return Err(ApiError::NotFound),
            _ => {}
        }
        if cfg.spa_fallback
            && !safe.has_extension()
            && is_navigation(&req.headers)
            && let Some(Found::File(index, meta)) =
                self.lookup(cfg, &cfg.root.join("index.html")).await
        {
            return self.file(cfg, req, "/index.html", &index, &meta).await;
        }
        Err(ApiError::NotFound)
    }

    /// `path` resolved (symlinks followed) if it exists below the root and no component of it
    /// below the root is a dotfile; [`Found::Refused`] if it exists but is not one of those.
    async fn lookup(&self, cfg: &StaticConfig, path: &Path) -> Option<Found> {
        let canonical = tokio::fs::canonicalize(path).await.ok()?;
        let Ok(rel) = canonical.strip_prefix(&cfg.root) else {
            tracing::warn!(
                path = %path.display(),
                "static file resolves outside the root (symlink?): refused"
            );
            return Some(Found::Refused);
        };
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            return Some(Found::Refused);
        }
        let meta = tokio::fs::metadata(&canonical).await.ok()?;
        if meta.is_file() {
            Some(Found::File(canonical, meta))
        } else if meta.is_dir() {
            Some(Found::Dir(canonical))
        } else {
            None
        }
    }

    async fn file(
        &self,
        cfg: &StaticConfig,
        req: &Parts,
        url_path: &str,
        file: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<Response, ApiError> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let class = CacheClass::of(cfg, url_path, &name);
        if class == CacheClass::Html && self.csp.enabled {
            return self.html_with_nonce(req, file, meta).await;
        }
        let head = req.method == Method::HEAD;
        let mut variant: (PathBuf, std::fs::Metadata, Option<Coding>) =
            (file.to_path_buf(), meta.clone(), None);
        let mut has_variants = false;
        if cfg.precompressed {
            let mut available = Vec::new();
            for coding in [Coding::Br, Coding::Gzip] {
                let mut sibling = file.as_os_str().to_owned();
                sibling.push(".");
                sibling.push(coding.suffix());
                if let Some(Found::File(p, m)) = self.lookup(cfg, Path::new(&sibling)).await {
                    available.push((coding, p, m));
                }
            }
            has_variants = !available.is_empty();
            let codings: Vec<Coding> = available.iter().map(|(c, _, _)| *c).collect();
            if let Some(best) = files::acceptable(&req.headers, &codings).first()
                && let Some((c, p, m)) = available.into_iter().find(|(c, _, _)| c == best)
            {
                variant = (p, m, Some(c));
            }
        }
        let (path, meta, coding) = variant;
        let etag = self.etags.get(&path, &meta).await.map_err(|e| {
            tracing::error!(error = %e, "reading a static file failed");
            ApiError::Internal
        })?;
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, etag.clone());
        h.insert(header::CACHE_CONTROL, class.cache_control());
        if has_variants {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if class == CacheClass::ServiceWorker {
            h.insert(
                HeaderName::from_static("service-worker-allowed"),
                HeaderValue::from_static("/"),
            );
        }
        let is_script = files::content_type(&name)
            .to_str()
            .is_ok_and(|ct| ct.starts_with("text/javascript"));
        let mut resp = if files::none_match(&req.headers, &etag) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().extend(h);
            r
        } else {
            h.insert(header::CONTENT_TYPE, files::content_type(&name));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
            if let Some(c) = coding {
                h.insert(header::CONTENT_ENCODING, c.header());
            }
            let body = if head {
                Body::empty()
            } else {
                files::stream(&path).await.map_err(|e| {
                    tracing::error!(error = %e, "opening a static file failed");
                    ApiError::Internal
                })?
            };
            let mut r = Response::new(body);
            r.headers_mut().extend(h);
            r
        };
        if is_script || !self.csp.enabled {
            // A worker's policy is the one its script is served with: give scripts none, so the
            // service worker is not confined to `default-src 'none'`. Pages start workers only
            // under their own policy (`worker-src 'self'`).
            resp.extensions_mut().insert(CspDecided);
        }
        Ok(resp)
    }

    async fn html_with_nonce(
        &self,
        req: &Parts,
        file: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<Response, ApiError> {
        if meta.len() > MAX_HTML {
            tracing::error!(path = %file.display(), "HTML file too large to rewrite");
            return Err(ApiError::Internal);
        }
        let html = tokio::fs::read(file).await.map_err(|e| {
            tracing::error!(error = %e, "reading an HTML file failed");
            ApiError::Internal
        })?;
        let nonce = Csp::nonce().map_err(|e| {
            tracing::error!(error = %e, "no nonce for the CSP");
            ApiError::Internal
        })?;
        let body = rewrite::add_nonce(&html, &nonce, self.csp.style_nonce).map_err(|e| {
            tracing::error!(path = %file.display(), error = %e, "rewriting HTML failed");
            ApiError::Internal
        })?;
        let len = body.len();
        let mut resp = Response::new(if req.method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        // The nonce must never be served twice: no shared cache may store this, and there is
        // no validator, so a revalidation always gets a fresh document and nonce.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        let (name, value) = self.csp.header(&nonce);
        h.insert(name, value);
        if let Some(v) = self.csp.reporting_endpoints() {
            h.insert(HeaderName::from_static("reporting-endpoints"), v.clone());
        }
        resp.extensions_mut().insert(CspDecided);
        Ok(resp)
    }

    fn csp_enabled(&self) -> bool {
        self.csp.enabled
    }
}

enum Found {
    File(PathBuf, std::fs::Metadata),
    Dir(PathBuf),
    /// Exists, but outside the root or behind a dot component: never served, no fallback.
    Refused,
}

/// A top-level navigation, as opposed to a script's `fetch`: the Fetch Metadata headers when the
/// browser sends them (`Sec-Fetch-Mode: navigate`, else `Sec-Fetch-Dest: document`), otherwise
/// an `Accept` that asks for HTML.
pub fn is_navigation(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(mode) = get("sec-fetch-mode") {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if let Some(dest) = get("sec-fetch-dest") {
        return dest.eq_ignore_ascii_case("document");
    }
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// Outermost layer (inside the security headers): every response that has no policy yet and
/// that the PWA module did not decide on gets [`csp::NON_DOCUMENT_POLICY`] — API JSON and
/// problems included. A policy an upstream sent is kept.
#[derive(Debug, Clone)]
pub struct FallbackCsp(pub std::sync::Arc<Pwa>);

impl Around for FallbackCsp {
    type Carry = ();

    fn before(&self, _: &mut Request) -> Before<()> {
        Before::Continue(())
    }

    fn after(&self, (): (), resp: &mut Response) {
        if !self.0.csp_enabled() || resp.extensions().get::<CspDecided>().is_some() {
            return;
        }
        let h = resp.headers_mut();
        if !h.contains_key(header::CONTENT_SECURITY_POLICY)
            && !h.contains_key(header::CONTENT_SECURITY_POLICY_REPORT_ONLY)
        {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp::NON_DOCUMENT_POLICY),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_detection() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(is_navigation(&h(&[("accept", "text/html,*/*;q=0.8")])));
        assert!(is_navigation(&h(&[
            ("sec-fetch-mode", "navigate"),
            ("accept", "*/*")
        ])));
        assert!(is_navigation(&h(&[("sec-fetch-dest", "document")])));
        assert!(!is_navigation(&h(&[("accept", "application/json")])));
        assert!(!is_navigation(&h(&[])));
        // A script's fetch asking for HTML is not a navigation.
        assert!(!is_navigation(&h(&[
            ("sec-fetch-mode", "cors"),
            ("accept", "text/html")
        ])));
        assert!(!is_navigation(&h(&[
            ("sec-fetch-dest", "empty"),
            ("accept", "text/html")
        ])));
    }
}
