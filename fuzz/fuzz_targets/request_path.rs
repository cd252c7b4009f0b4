//! Request path hygiene (`http::hygiene::check_path`), static-file path resolution
//! (`pwa::path::SafePath`) and route matching (`config::path_within`).
//!
//! Invariants: a path the hygiene layer lets through has no `.`/`..` segment (`;` parameters
//! stripped, as Tomcat does), no backslash and
//! no NUL, before or after one or two rounds of percent-decoding (so no upstream that decodes
//! can be walked out of a route prefix); a `SafePath` only ever names plain, visible files
//! strictly below the static root; a path within a route prefix starts with the prefix followed
//! by nothing or `/`.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use portcullis::{config::path_within, http::hygiene::check_path, pwa::path::SafePath};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if check_path(path).is_ok() {
        assert!(!path.contains("//"), "{path:?} has an empty segment");
        let once = lossy_decode(path);
        let twice = lossy_decode(&once);
        for form in [path, once.as_str(), twice.as_str()] {
            assert!(form.starts_with('/'), "{path:?}");
            assert!(
                !form.contains('\\') && !form.contains('\0'),
                "{path:?} → {form:?}"
            );
            assert!(
                !form
                    .split('/')
                    .map(|s| s.split(';').next().unwrap_or(s))
                    .any(|s| s == "." || s == ".."),
                "{path:?} → {form:?} has a dot segment"
            );
        }
    }
    if let Some(safe) = SafePath::parse(path) {
        let root = Path::new("/srv/static");
        let joined = safe.join_to(root);
        assert!(joined.starts_with(root));
        assert_eq!(
            joined.components().count(),
            root.components().count() + safe.segments.len()
        );
        for c in joined.strip_prefix(root).expect("below root").components() {
            let Component::Normal(name) = c else {
                panic!("{path:?} resolves to a non-plain component {c:?}");
            };
            let name = name.to_str().expect("utf-8");
            assert!(
                !name.starts_with('.') && !name.chars().any(char::is_control),
                "{path:?}"
            );
        }
    }
    // Route matching is segment-aware: `/api/orders` claims `/api/orders/…`, never `/api/ordersX`.
    for prefix in ["/api", "/api/orders"] {
        if path_within(path, prefix) {
            let rest = &path[prefix.len()..];
            assert!(
                rest.is_empty() || rest.starts_with('/'),
                "{path:?} within {prefix}"
            );
        }
    }
});

/// Percent-decoding as a lenient upstream would do it (bad escapes kept as they are).
fn lossy_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
