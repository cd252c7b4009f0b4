//! Which headers cross the gateway. Requests lose the browser's credentials (cookies,
//! `Authorization`, `X-CSRF-Token`), hop-by-hop headers (RFC 9110 7.6.1, and any named in
//! `Connection`) and client-supplied forwarding headers; responses lose `Set-Cookie` and hop-by-hop
//! headers.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::PublicOrigin;

// `HeaderName`s rather than `&str`: removing by a `&str` parses the name on every call,
// on every proxied request (docs/performance.md).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

static BROWSER_ONLY: [HeaderName; 13] = [
    header::COOKIE,
    header::AUTHORIZATION,
    HeaderName::from_static("x-csrf-token"),
    // Method overrides: some frameworks turn a POST (or a GET) into another method when they
    // see one, behind the CSRF layer's back. Never forwarded.
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    header::HOST,
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-real-ip"),
    header::EXPECT,
];

/// Headers named in `Connection` (RFC 9110 §7.6.1): hop-by-hop for this message only.
/// `keep-alive`, which every HTTP/1.1 browser request names, is in [`HOP_BY_HOP`] already and
/// is skipped here, so the common request parses no name and allocates nothing.
fn named_in_connection(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

/// Removes every header whose name `doomed` picks, in one pass over the names present: a
/// request carries a handful of headers, and removing each of the dozens of forbidden names
/// by lookup cost more than the rest of the rewrite (docs/performance.md).
fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|n| doomed(n)).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

fn is_hop_by_hop(name: &HeaderName, named: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || named.contains(name)
}

/// Identity and forwarding headers some upstreams trust (auth-proxy conventions, CDN client IPs,
/// URL rewrites). Compared after folding `_` to `-`, because CGI/WSGI-style upstreams (and nginx
/// with `underscores_in_headers`) read `X-Forwarded_For` as `X-Forwarded-For`.
const CLIENT_IDENTITY: [&str; 14] = [
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-user",
    "x-remote-user",
    "remote-user",
    "x-email",
    "x-access-token",
    "x-id-token",
];

/// Prefixes of the same kind (`X-Forwarded-Port`, `X-Auth-Request-User`, ...).
const CLIENT_IDENTITY_PREFIXES: [&str; 2] = ["x-forwarded-", "x-auth-request-"];

/// Whether a browser-supplied header names an identity or a forwarding hop, in any `-`/`_`
/// spelling, including underscore spellings of [`BROWSER_ONLY`] names.
fn is_client_identity(name: &HeaderName) -> bool {
    // Allocates only for the rare name with an underscore.
    let folded = if name.as_str().contains('_') {
        std::borrow::Cow::Owned(name.as_str().replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name.as_str())
    };
    let folded = folded.as_ref();
    CLIENT_IDENTITY.contains(&folded)
        || BROWSER_ONLY.iter().any(|n| n.as_str() == folded)
        || CLIENT_IDENTITY_PREFIXES
            .iter()
            .any(|p| folded.starts_with(p))
}

/// Appends `ip` as `Display` writes it. IPv4, the common case, without `core::fmt`: this runs on
/// every proxied request, and formatting through `fmt` cost ~2,000 instructions of ~90,000.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Rewrites the browser's request headers for the upstream.
pub fn upstream_request(
    h: &mut HeaderMap,
    bearer: &str,
    client_ip: Option<IpAddr>,
    prior_forwarded_for: Option<String>,
    origin: &PublicOrigin,
) -> Result<(), http::header::InvalidHeaderValue> {
    let named = named_in_connection(h);
    remove_where(h, |n| {
        is_hop_by_hop(n, &named) || BROWSER_ONLY.contains(n) || is_client_identity(n)
    });
    let mut value = String::with_capacity("Bearer ".len() + bearer.len());
    value.push_str("Bearer ");
    value.push_str(bearer);
    let mut auth = HeaderValue::from_maybe_shared(bytes::Bytes::from(value))?;
    auth.set_sensitive(true);
    h.insert(header::AUTHORIZATION, auth);
    let xff = match (prior_forwarded_for, client_ip) {
        (prior, Some(ip)) => {
            let mut v = match prior {
                Some(p) => p + ", ",
                None => String::with_capacity(15),
            };
            push_ip(&mut v, ip);
            Some(v)
        }
        (prior, None) => prior,
    };
    if let Some(v) = xff.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::from_str(&origin.scheme) {
        h.insert(X_FORWARDED_PROTO, v);
    }
    if let Ok(v) = HeaderValue::from_str(&origin.host) {
        h.insert(X_FORWARDED_HOST, v);
    }
    Ok(())
}

/// Response headers an upstream may not send to the app's origin: cookies (the gateway owns the
/// origin's cookies), `Service-Worker-Allowed` (with a script-like response it would let a
/// service worker control the whole origin, not just its API path) and `Clear-Site-Data` (it
/// would wipe the origin's cookies and storage, logging the user out).
static UPSTREAM_NEVER: [HeaderName; 3] = [
    header::SET_COOKIE,
    HeaderName::from_static("service-worker-allowed"),
    HeaderName::from_static("clear-site-data"),
];

/// Cleans the upstream's response headers for the browser.
pub fn downstream_response(h: &mut HeaderMap) {
    // Both framings (RFC 9112 §6.3): the body was read as chunked, so its `Content-Length`
    // is false; an intermediary must drop it before forwarding. (`Transfer-Encoding` itself is
    // hop-by-hop: the body is re-framed for the browser.)
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    let named = named_in_connection(h);
    remove_where(h, |n| {
        is_hop_by_hop(n, &named) || UPSTREAM_NEVER.contains(n) || is_cors(n)
    });
}

/// CORS response headers (`Access-Control-*`, Fetch standard §3.2.3). The app is served from the
/// gateway's own origin, so its API calls never need CORS; an upstream that reflects `Origin`
/// with `Access-Control-Allow-Credentials: true` would otherwise let a page on a sibling
/// subdomain (same-site, so `SameSite=Strict` still sends the session cookie) read the user's
/// API responses through the gateway. The gateway answers for its origin, not the upstream.
fn is_cors(name: &HeaderName) -> bool {
    name.as_str().starts_with("access-control-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        let mut addrs: Vec<IpAddr> = (0..=255u8)
            .flat_map(|o| {
                [
                    IpAddr::from([o, 0, 10, 255]),
                    IpAddr::from([9, o, 100, 1]),
                    IpAddr::from([127, 99, o, 200]),
                    IpAddr::from([255, 1, 0, o]),
                ]
            })
            .collect();
        addrs.push("::1".parse().expect("v6"));
        addrs.push("::ffff:192.0.2.7".parse().expect("v6"));
        addrs.push("2001:db8::8a2e:370:7334".parse().expect("v6"));
        for ip in addrs {
            let mut out = String::from("prior, ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("prior, {ip}"));
        }
    }

    fn origin() -> PublicOrigin {
        PublicOrigin {
            origin: "https://app.example".into(),
            scheme: "https".into(),
            host: "app.example".into(),
        }
    }

    #[test]
    fn browser_credentials_never_cross() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("cookie", "__Host-SessionID=x"),
            ("authorization", "Basic Zm9vOmJhcg=="),
            ("x-csrf-token", "t"),
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("accept", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        upstream_request(
            &mut h,
            "AT",
            Some("203.0.113.5".parse().expect("ip")),
            None,
            &origin(),
        )
        .expect("ok");
        assert_eq!(
            h.get("authorization").map(|v| v.as_bytes()),
            Some(&b"Bearer AT"[..])
        );
        for gone in [
            "cookie",
            "x-csrf-token",
            "connection",
            "x-secret-hop",
            "te",
            "forwarded",
        ] {
            assert!(!h.contains_key(gone), "{gone} must be stripped");
        }
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"203.0.113.5"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        assert_eq!(
            h.get("accept").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
    }

    #[test]
    fn a_content_length_beside_transfer_encoding_is_dropped() {
        let mut h = HeaderMap::new();
        h.append("content-length", HeaderValue::from_static("2"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        downstream_response(&mut h);
        assert!(!h.contains_key("content-length") && !h.contains_key("transfer-encoding"));
        let mut h = HeaderMap::new();
        h.append("content-length", HeaderValue::from_static("2"));
        downstream_response(&mut h);
        assert_eq!(
            h.get("content-length").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn upstream_cookies_are_dropped() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("tracker=1"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        h.append(
            "access-control-allow-origin",
            HeaderValue::from_static("https://sibling.example.com"),
        );
        h.append(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        h.append(
            "access-control-expose-headers",
            HeaderValue::from_static("*"),
        );
        h.append("x-access-control-note", HeaderValue::from_static("kept"));
        downstream_response(&mut h);
        assert!(!h.contains_key("set-cookie") && !h.contains_key("keep-alive"));
        for cors in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            assert!(!h.contains_key(cors), "{cors} passed through");
        }
        assert!(h.contains_key("content-type") && h.contains_key("x-access-control-note"));
    }
}
