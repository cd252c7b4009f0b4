//! Which headers cross the gateway. Requests lose the browser's credentials (cookies,
//! `Authorization`, `X-CSRF-Token`), hop-by-hop headers (RFC 9110 7.6.1, and any named in
//! `Connection`) and client-supplied forwarding headers; responses lose `Set-Cookie` and hop-by-hop
//! headers.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::PublicOrigin;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const BROWSER_ONLY: [&str; 10] = [
    "cookie",
    "authorization",
    "x-csrf-token",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "expect",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
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
    strip_hop_by_hop(h);
    for n in BROWSER_ONLY {
        h.remove(n);
    }
    let mut auth = HeaderValue::from_str(&format!("Bearer {bearer}"))?;
    auth.set_sensitive(true);
    h.insert(header::AUTHORIZATION, auth);
    let xff = match (prior_forwarded_for, client_ip) {
        (Some(prior), Some(ip)) => Some(format!("{prior}, {ip}")),
        (None, Some(ip)) => Some(ip.to_string()),
        (Some(prior), None) => Some(prior),
        (None, None) => None,
    };
    if let Some(v) = xff.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(&origin.scheme) {
        h.insert("x-forwarded-proto", v);
    }
    if let Ok(v) = HeaderValue::from_str(&origin.host) {
        h.insert("x-forwarded-host", v);
    }
    Ok(())
}

/// Cleans the upstream's response headers for the browser.
pub fn downstream_response(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::SET_COOKIE);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn upstream_cookies_are_dropped() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("tracker=1"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        downstream_response(&mut h);
        assert!(!h.contains_key("set-cookie") && !h.contains_key("keep-alive"));
        assert!(h.contains_key("content-type"));
    }
}
