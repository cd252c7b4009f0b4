//! File-level rules: content types, cache classes, precompressed variants, strong ETags.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use axum::body::Body;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, header};
use tokio::io::AsyncReadExt;

use crate::config::StaticConfig;

/// How long a response may be reused, by what the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheClass {
    /// `*.html`, `*.htm`: always revalidated (and, with a nonce, never stored by shared caches).
    Html,
    /// The web app manifest (`*.webmanifest`, `manifest.json`): revalidated.
    Manifest,
    /// The configured service worker script: revalidated, `Service-Worker-Allowed: /`.
    ServiceWorker,
    /// A file name carrying a content hash: cached for a year, never revalidated.
    Immutable,
    /// Anything else: revalidated (cheap with the ETag).
    Revalidate,
}

impl CacheClass {
    pub fn of(cfg: &StaticConfig, url_path: &str, file_name: &str) -> CacheClass {
        let lower = file_name.to_ascii_lowercase();
        if url_path == cfg.service_worker {
            CacheClass::ServiceWorker
        } else if lower.ends_with(".html") || lower.ends_with(".htm") {
            CacheClass::Html
        } else if lower.ends_with(".webmanifest") || lower == "manifest.json" {
            CacheClass::Manifest
        } else if match &cfg.immutable_pattern {
            Some(re) => re.is_match(url_path),
            None => is_fingerprinted(file_name),
        } {
            CacheClass::Immutable
        } else {
            CacheClass::Revalidate
        }
    }

    pub fn cache_control(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheClass::Immutable => "public, max-age=31536000, immutable",
            _ => "no-cache",
        })
    }
}

/// The built-in fingerprint rule: the file name (extension aside), split at `.` and `-`, has a
/// component of at least 8 characters from `[A-Za-z0-9_]` that contains a digit and is either
/// all hex (`app.3f9a1c2e.js`, webpack) or mixes upper and lower case (`index-BHhXPj1a.js`, Vite
/// and Rollup). Conservative on purpose: a miss only costs a revalidation, while a false hit
/// would pin a changing file in browsers for a year.
pub fn is_fingerprinted(file_name: &str) -> bool {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _ext)| stem);
    stem.split(['.', '-']).any(|c| {
        c.len() >= 8
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && c.bytes().any(|b| b.is_ascii_digit())
            && (c.bytes().all(|b| b.is_ascii_hexdigit())
                || (c.bytes().any(|b| b.is_ascii_uppercase())
                    && c.bytes().any(|b| b.is_ascii_lowercase())))
    })
}

/// `Content-Type` from the extension, with `charset=utf-8` for text.
pub fn content_type(file_name: &str) -> HeaderValue {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        // RFC 9239; mime_guess says application/javascript.
        "js" | "mjs" | "cjs" => "text/javascript".to_owned(),
        "webmanifest" => "application/manifest+json".to_owned(),
        "map" => "application/json".to_owned(),
        "wasm" => "application/wasm".to_owned(),
        _ => mime_guess::from_ext(&ext)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_owned(),
    };
    let texty = mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json" | "application/xml" | "application/javascript"
        );
    let v = if texty && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// A content coding we may have a precompressed sibling for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gz",
        }
    }
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        })
    }
}

/// The codings of `available` the request accepts, best first (higher q, then br before gzip).
pub fn acceptable(headers: &HeaderMap, available: &[Coding]) -> Vec<Coding> {
    let mut explicit: Vec<(String, f32)> = Vec::new();
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let mut q = 1.0f32;
            for p in parts {
                if let Some((k, val)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = val.trim().parse().unwrap_or(0.0);
                }
            }
            explicit.push((coding, q));
        }
    }
    let q_of = |c: Coding| -> f32 {
        let names: &[&str] = match c {
            Coding::Br => &["br"],
            Coding::Gzip => &["gzip", "x-gzip"],
        };
        explicit
            .iter()
            .find(|(n, _)| names.contains(&n.as_str()))
            .or_else(|| explicit.iter().find(|(n, _)| n == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let mut ok: Vec<(Coding, f32)> = available
        .iter()
        .map(|c| (*c, q_of(*c)))
        .filter(|(_, q)| *q > 0.0)
        .collect();
    // Stable: equal q keeps `available`'s order (br first).
    ok.sort_by(|a, b| b.1.total_cmp(&a.1));
    ok.into_iter().map(|(c, _)| c).collect()
}

/// Strong ETags, computed once per file version (path, size, mtime) from the file's bytes.
#[derive(Debug, Default)]
pub struct ETags(DashMap<PathBuf, (u64, Option<SystemTime>, HeaderValue)>);

impl ETags {
    pub async fn get(&self, path: &Path, meta: &std::fs::Metadata) -> std::io::Result<HeaderValue> {
        let (len, mtime) = (meta.len(), meta.modified().ok());
        if let Some(e) = self.0.get(path)
            && e.0 == len
            && e.1 == mtime
        {
            return Ok(e.2.clone());
        }
        let mut file = tokio::fs::File::open(path).await?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let digest = ctx.finish();
        let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18]));
        let value = HeaderValue::from_str(&tag).map_err(std::io::Error::other)?;
        self.0
            .insert(path.to_path_buf(), (len, mtime, value.clone()));
        Ok(value)
    }
}

/// `If-None-Match` matches `etag` (weak comparison, as RFC 9110 §13.1.2 requires for it).
pub fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    let ours = ours.trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

/// The file's bytes as a stream of 64 KiB chunks.
pub async fn stream(path: &Path) -> std::io::Result<Body> {
    let file = tokio::fs::File::open(path).await?;
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Body::from_stream(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        for yes in [
            "app.3f9a1c2e.js",
            "main.abcdef12.css",
            "index-BHhXPj1a.js",
            "chunk-12345678.js",
            "3f9a1c2e4b.js",
            "vendor.0123456789abcdef.chunk.js",
        ] {
            assert!(is_fingerprinted(yes), "{yes}");
        }
        for no in [
            "app.js",
            "index.html",
            "jquery-3.7.1.min.js",
            "roboto-v30-latin-regular.woff2",
            "polyfills-es2015.js",
            "settings.js",
            "Roboto-Latin-V3.woff2",
            "abcdefgh.js",
            "3f9a1c2.js",
        ] {
            assert!(!is_fingerprinted(no), "{no}");
        }
    }

    #[test]
    fn content_types() {
        for (name, ct) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.json", "application/json; charset=utf-8"),
            ("m.webmanifest", "application/manifest+json; charset=utf-8"),
            ("a.svg", "image/svg+xml; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.woff2", "font/woff2"),
            ("a.wasm", "application/wasm"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(name), ct, "{name}");
        }
    }

    #[test]
    fn accept_encoding() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).expect("v"),
            );
            m
        };
        let both = [Coding::Br, Coding::Gzip];
        assert_eq!(acceptable(&h("gzip, deflate, br"), &both), both);
        assert_eq!(acceptable(&h("gzip"), &both), [Coding::Gzip]);
        assert_eq!(acceptable(&h("br;q=0, gzip"), &both), [Coding::Gzip]);
        assert_eq!(
            acceptable(&h("br;q=0.5, gzip;q=0.9"), &both),
            [Coding::Gzip, Coding::Br]
        );
        assert_eq!(acceptable(&h("*"), &both), both);
        assert_eq!(acceptable(&h("identity"), &both), []);
        assert_eq!(acceptable(&HeaderMap::new(), &both), []);
        assert_eq!(acceptable(&h("br"), &[Coding::Gzip]), []);
    }

    #[test]
    fn if_none_match() {
        let tag = HeaderValue::from_static("\"abc\"");
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).expect("v"));
            m
        };
        assert!(none_match(&h("\"abc\""), &tag));
        assert!(none_match(&h("\"x\", W/\"abc\""), &tag));
        assert!(none_match(&h("*"), &tag));
        assert!(!none_match(&h("\"abd\""), &tag));
        assert!(!none_match(&HeaderMap::new(), &tag));
    }
}
