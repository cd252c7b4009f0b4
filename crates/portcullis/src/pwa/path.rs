//! From a request path to a relative file path that cannot leave the static root, whatever the
//! encoding. The hygiene layer already refuses encoded dots, slashes, backslashes and NULs; this
//! is the second line, applied to the *decoded* path, and the resolved file is still checked
//! against the canonical root (symlinks) by the caller.

use std::path::{Path, PathBuf};

/// A request path, decoded and checked segment by segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    /// Decoded, non-empty segments; none is `.`/`..`, starts with `.`, or holds `/`, `\`, NUL or
    /// another control character.
    pub segments: Vec<String>,
    /// The path ended with `/` (or is `/`).
    pub trailing_slash: bool,
}

impl SafePath {
    /// `None` for anything that could name something other than a plain, visible file below
    /// the root: such paths are answered 404, never resolved.
    pub fn parse(raw: &str) -> Option<SafePath> {
        let rest = raw.strip_prefix('/')?;
        if rest.is_empty() {
            return Some(SafePath {
                segments: Vec::new(),
                trailing_slash: true,
            });
        }
        let trailing_slash = rest.ends_with('/');
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            let decoded = percent_decode(seg)?;
            if decoded.is_empty()
                || decoded.starts_with('.')
                || decoded
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c.is_control())
            {
                return None;
            }
            segments.push(decoded);
        }
        Some(SafePath {
            segments,
            trailing_slash,
        })
    }

    /// The path below `root`.
    pub fn join_to(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for s in &self.segments {
            p.push(s);
        }
        p
    }

    /// The last segment has an extension (`/app.js`, `/a/b.c`): such paths never fall back to
    /// `index.html`.
    pub fn has_extension(&self) -> bool {
        self.segments.last().is_some_and(|s| s.contains('.'))
    }
}

/// Strict percent-decoding to UTF-8: a malformed escape or invalid UTF-8 is `None`.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Option<Vec<String>> {
        SafePath::parse(p).map(|s| s.segments)
    }

    #[test]
    fn plain_paths() {
        assert_eq!(segs("/"), Some(vec![]));
        assert_eq!(segs("/app.js"), Some(vec!["app.js".to_owned()]));
        assert_eq!(
            segs("/a/b%20c.txt"),
            Some(vec!["a".to_owned(), "b c.txt".to_owned()])
        );
        assert!(SafePath::parse("/a/").expect("ok").trailing_slash);
        assert!(!SafePath::parse("/a").expect("ok").trailing_slash);
        assert!(SafePath::parse("/a/b.js").expect("ok").has_extension());
        assert!(!SafePath::parse("/a.b/c").expect("ok").has_extension());
    }

    #[test]
    fn escapes_are_refused() {
        for p in [
            "relative",
            "/..",
            "/a/../b",
            "/a/./b",
            "/%2e%2e/etc/passwd",
            "/%2E%2e",
            "/.%2e/x",
            "/..%2fetc",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/a%0ab",
            "/%",
            "/%zz",
            "/%ff",
            "/a//b",
            "//etc/passwd",
            "/.env",
            "/.git/config",
            "/a/.hidden/x.js",
            "/%2egit/config",
        ] {
            assert_eq!(SafePath::parse(p), None, "{p} must be refused");
        }
    }
}
