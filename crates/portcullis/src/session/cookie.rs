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
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
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
}
