//! `returnTo`: only a same-origin relative path survives; anything else becomes `/`.
//!
//! Accepted: starts with exactly one `/`, then no `/` or `\` as second character, no control
//! characters or whitespace, no backslash anywhere, nothing percent-encoded that decodes to one of
//! those (so `/%2F/evil.com` or `/%5Cevil.com` cannot become `//evil.com` later), at most 2 KiB.
//! The value is re-checked after one percent-decoding as well, so double-encoding gains nothing.
//! Dot segments (`.`, `..`) in the path are refused too: `/..//evil.com` resolves to `//evil.com`.

const MAX_LEN: usize = 2048;

pub fn sanitize(input: Option<&str>) -> String {
    match input {
        Some(s) if is_safe(s) => s.to_owned(),
        _ => "/".to_owned(),
    }
}

pub fn is_safe(s: &str) -> bool {
    if !shape_ok(s, false) {
        return false;
    }
    // Whatever a later hop might decode must still be a plain relative path.
    let decoded = percent_decode(s);
    shape_ok(&decoded, true) && shape_ok(&percent_decode(&decoded), true)
}

/// The `Location` value: non-ASCII and spaces percent-encoded (header values are ASCII).
pub fn to_location(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() && c != ' ' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn shape_ok(s: &str, allow_space: bool) -> bool {
    let b = s.as_bytes();
    !s.is_empty()
        && s.len() <= MAX_LEN
        && b[0] == b'/'
        && !matches!(b.get(1), Some(b'/') | Some(b'\\'))
        && !s.contains('\\')
        && !has_dot_segment(s)
        && !s.chars().any(|c| {
            c.is_control() || (c.is_whitespace() && !(allow_space && c == ' ')) || is_invisible(c)
        })
}

/// `/..//evil.com` resolves to the path `//evil.com` on our host, which the app's own router may
/// read as another host: dot segments in the path are refused.
fn has_dot_segment(s: &str) -> bool {
    let path = s.split(['?', '#']).next().unwrap_or(s);
    path.split('/').any(|seg| seg == "." || seg == "..")
}

/// Characters browsers strip or fold that could hide a second slash.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FF0F}' | '\u{FF3C}' | '\u{2215}' | '\u{29F8}')
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_relative_paths() {
        for ok in [
            "/",
            "/dashboard",
            "/a/b?c=d&e=%20f#frag",
            "/orders/42",
            "/a+b",
            "/%E2%82%AC",
            "/.well-known/x",
            "/a/b?x=../..",
        ] {
            assert_eq!(sanitize(Some(ok)), ok, "{ok}");
        }
    }

    #[test]
    fn refuses_open_redirects() {
        for bad in [
            "",
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "http:evil.com",
            "javascript:alert(1)",
            "evil.com",
            "/%2F/evil.com",
            "/%2f%2fevil.com",
            "/%5Cevil.com",
            "/%255Cevil.com",
            "/%09/evil.com",
            "/\t/evil.com",
            "/\r\n/evil.com",
            "/ /evil.com",
            "/x\\y",
            "/\u{200B}/evil.com",
            "/\u{FF0F}evil.com",
            "/%00",
            "/%E2%80%8B/evil.com",
            "/..//evil.com",
            "/.//evil.com",
            "/a/../..//evil.com",
            "/%2e%2e//evil.com",
        ] {
            assert_eq!(sanitize(Some(bad)), "/", "{bad:?} must be refused");
        }
        assert_eq!(sanitize(None), "/");
        assert_eq!(to_location("/caf\u{e9} x"), "/caf%C3%A9%20x");
        assert_eq!(sanitize(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }
}
