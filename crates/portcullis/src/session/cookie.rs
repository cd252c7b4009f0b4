//! Reading cookies from requests and writing the two cookies Portcullis sets.
//!
//! The session cookie is exactly `__Host-…=<ticket>; Secure; HttpOnly; SameSite=Strict; Path=/;
//! Max-Age=<absolute lifetime>`. The login-binding cookie is `SameSite=Lax`, because it must come
//! back on the provider's cross-site redirect to the callback.

use http::{HeaderMap, HeaderValue, header};

/// Name of the cookie that binds a pending login to the browser that started it.
pub const LOGIN_BINDING_COOKIE: &str = "__Host-Portcullis-Login";

/// All values of cookie `name` across every `Cookie` header (HTTP/2 may split them). Names match
/// exactly: `__host-SessionID` is a different cookie.
///
/// Read as bytes, not as a string: browsers send other cookies' values as raw UTF-8 (or worse),
/// and one such cookie, even a sibling subdomain's, must not hide ours. A value of our name
/// that is not UTF-8 still counts (as `""`, which no check accepts), so a duplicate stays
/// ambiguous.
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (k == name.as_bytes()).then(|| std::str::from_utf8(v).unwrap_or(""))
        })
}

/// The single value of a cookie; `None` if absent *or* present more than once (a duplicated
/// session cookie is ambiguous, and no legitimate browser sends one for a `__Host-` name).
pub fn single<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    let mut it = values(headers, name);
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

fn build(name: &str, value: &str, same_site: &str, max_age: u64) -> HeaderValue {
    let s = format!(
        "{name}={value}; Secure; HttpOnly; SameSite={same_site}; Path=/; Max-Age={max_age}"
    );
    // Names are validated at config time and values are base64url: always a valid header.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

pub fn session(name: &str, ticket: &str, max_age: u64) -> HeaderValue {
    build(name, ticket, "Strict", max_age)
}

pub fn expire_session(name: &str) -> HeaderValue {
    build(name, "", "Strict", 0)
}

pub fn login_binding(value: &str, max_age: u64) -> HeaderValue {
    build(LOGIN_BINDING_COOKIE, value, "Lax", max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_attributes() {
        assert_eq!(
            session("__Host-SessionID", "abc", 28800),
            "__Host-SessionID=abc; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"
        );
    }

    #[test]
    fn parsing_is_exact_and_rejects_duplicates() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __host-SessionID=x; __Host-SessionID=good"),
        );
        assert_eq!(single(&h, "__Host-SessionID"), Some("good"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-SessionID=evil"),
        );
        assert_eq!(single(&h, "__Host-SessionID"), None);
        assert_eq!(values(&h, "__Host-SessionID").count(), 2);
    }

    #[test]
    fn other_cookies_with_raw_bytes_do_not_hide_ours() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=M\xc3\xbcller; x=\xe9; __Host-SessionID=good")
                .expect("obs-text is a valid header value"),
        );
        assert_eq!(single(&h, "__Host-SessionID"), Some("good"));
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Host-SessionID=\xff").expect("obs-text"),
        );
        assert_eq!(single(&h, "__Host-SessionID"), None);
    }
}
