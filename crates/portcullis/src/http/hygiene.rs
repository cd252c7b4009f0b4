//! Request hygiene, before any routing: paths that could escape a route prefix or be read
//! differently by an upstream, and a `_method` query parameter, are refused with 400. So is any
//! `Upgrade` other than `websocket` (e.g. `h2c`, a known way to smuggle requests past a proxy);
//! WebSocket upgrades themselves are admitted only on routes that allow them (`proxy::websocket`).
//! `TRACE` and `CONNECT` are refused with 501: a TRACE forwarded with the bearer token would
//! come back with it in the body (RFC 9110 §9.3.8), and the gateway tunnels nothing.
//! Method-override *headers* are not refused here: the proxy strips them (`proxy::headers`).

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};

use super::{
    around::{Around, Before},
    problem::ApiError,
};

/// Marks a request the server read off a connection (set by `server`), as opposed to one built
/// in-process, with when its head had been read (for `portcullis_gateway_overhead_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct FromListener {
    pub arrived: std::time::Instant,
}

/// The hygiene layer: refuses what the module docs list, with 400, before any routing.
#[derive(Debug, Clone, Copy)]
pub struct RejectUnsafeRequests;

impl Around for RejectUnsafeRequests {
    type Carry = ();

    fn before(&self, req: &mut Request) -> Before<()> {
        match refusal(req) {
            Some(resp) => Before::Answer(resp),
            None => Before::Continue(()),
        }
    }

    fn after(&self, (): (), _: &mut Response) {}
}

fn refusal(req: &Request) -> Option<Response> {
    if req.method() == http::Method::TRACE || req.method() == http::Method::CONNECT {
        tracing::info!(method = %req.method(), "method refused");
        return Some(ApiError::NotImplemented("method not supported").into_response());
    }
    // RFC 9112 §3.2: a server MUST answer an HTTP/1.1 request without `Host` with 400. Only
    // requests read off a connection are held to it; in-process callers (`app()`) build theirs.
    let missing_host = req.version() == http::Version::HTTP_11
        && req.extensions().get::<FromListener>().is_some()
        && !req.headers().contains_key(http::header::HOST);
    let framing = match check_framing(req.headers()) {
        Ok(()) if missing_host => Err("no Host"),
        Ok(()) if !host_matches_authority(req) => Err("Host differs from :authority"),
        other => other,
    };
    if let Err(why) = framing {
        tracing::info!(reason = why, "request framing refused");
        // The rest of the connection may have been framed differently by a proxy in front.
        return Some(closing(ApiError::BadRequest("malformed request")));
    }
    if let Err(why) = check_path(req.uri().path()) {
        tracing::info!(reason = why, "request path refused");
        return Some(ApiError::BadRequest("path not allowed").into_response());
    }
    if !only_chunked(req.headers()) {
        // RFC 9112 §6.1: a transfer coding the server does not understand SHOULD get a 501.
        // hyper decodes the final `chunked` and would pass the rest (`gzip, chunked`) on as
        // if the body were plain.
        tracing::info!("request transfer coding refused");
        return Some(closing(ApiError::NotImplemented(
            "transfer coding not supported",
        )));
    }
    if has_content(req.headers()) && matches!(*req.method(), http::Method::GET | http::Method::HEAD)
    {
        // No browser sends one (fetch refuses a body on GET and HEAD), and an upstream that
        // ignores it would read the body as the start of the next request on a pooled
        // connection (a "CL.0" desync, shared by every user of that connection).
        tracing::info!(method = %req.method(), "request content on GET/HEAD refused");
        // The unread content would be taken for the next request: end the connection.
        return Some(closing(ApiError::BadRequest(
            "content not allowed with this method",
        )));
    }
    if let Some(v) = req.headers().get(http::header::UPGRADE)
        && !v.as_bytes().eq_ignore_ascii_case(b"websocket")
    {
        tracing::info!("non-WebSocket Upgrade refused");
        return Some(ApiError::BadRequest("upgrade not allowed").into_response());
    }
    if let Some(q) = req.uri().query()
        && url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("_method"))
    {
        tracing::info!("method-override parameter refused");
        return Some(ApiError::BadRequest("method override not allowed").into_response());
    }
    None
}

/// The refusal, with the connection closed after it: what follows on it cannot be trusted to be
/// framed as we read it.
fn closing(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// RFC 9113 §8.3.1: an HTTP/2 request whose `Host` names another authority than its
/// `:authority` SHOULD be treated as malformed. The gateway routes by neither, but a log, a
/// policy or an upstream further on might read the one we did not check. The two are compared
/// as the entities they name, normalised (RFC 3986 §6.2.3): the host in any case, and the
/// scheme's default port written or left out (`a.example:443` is `a.example` over https).
fn host_matches_authority(req: &Request) -> bool {
    if req.version() != http::Version::HTTP_2 {
        return true;
    }
    let (Some(authority), Some(host)) =
        (req.uri().authority(), req.headers().get(http::header::HOST))
    else {
        return true;
    };
    let Ok(host) = http::uri::Authority::try_from(host.as_bytes()) else {
        return false;
    };
    let default_port = match req.uri().scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    host.host().eq_ignore_ascii_case(authority.host())
        && host.port_u16().or(default_port) == authority.port_u16().or(default_port)
}

/// No `Transfer-Encoding`, or exactly `chunked` (the only coding the gateway handles).
fn only_chunked(headers: &http::HeaderMap) -> bool {
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")),
        (Some(_), Some(_)) => false,
    }
}

/// Whether the request announces content: a `Transfer-Encoding`, or a `Content-Length` other
/// than 0.
fn has_content(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
}

/// RFC 9112 3.2: at most one `Host`, and a valid one (no userinfo). RFC 9112 6.1: a request with
/// both `Transfer-Encoding` and `Content-Length` may be refused; we do, so a proxy in front that
/// framed it by the other header cannot desync us.
pub fn check_framing(headers: &http::HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Err("duplicated Host");
        }
        let valid = host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| !a.as_str().contains('@'));
        if !valid {
            return Err("invalid Host");
        }
    }
    // hyper itself drops the Content-Length of such an HTTP/1.1 request and closes the connection
    // afterwards; this is the second line, should that ever change.
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err("Transfer-Encoding with Content-Length");
    }
    Ok(())
}

/// The raw (still percent-encoded) path must have no empty segment (`//`: a request-target that
/// starts with one reads as a host to many URL parsers), no malformed escape (`%zz`, IIS's
/// `%u002e`), no dot segments, no encoded dots, slashes, backslashes or NULs (single or double
/// encoded), and no raw backslash; and so must what one and two rounds of percent-decoding make
/// of it (an upstream, or a chain of them, may decode), which also catches double encodings with
/// encoded hex digits (`%25%32%65` → `%2e` → `.`). Each decoded form must be UTF-8: an overlong
/// encoding such as `%c0%ae` is `.` to a lenient decoder.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("not absolute");
    }
    if path.contains("//") {
        return Err("empty segment");
    }
    if !path.contains('%') {
        // Nothing to decode: every decoded form is the path itself.
        return check_form(path);
    }
    let b = path.as_bytes();
    if b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    }) {
        return Err("malformed percent-encoding");
    }
    let once = percent_decode(path).ok_or("not UTF-8 once decoded")?;
    let twice = percent_decode(&once).ok_or("not UTF-8 once decoded")?;
    for form in [path, once.as_str(), twice.as_str()] {
        check_form(form)?;
    }
    Ok(())
}

/// One form of the path (raw or decoded) against the rules of [`check_path`].
fn check_form(path: &str) -> Result<(), &'static str> {
    if path.contains('\\') {
        return Err("backslash");
    }
    // Every pattern starts with `%`: a path without one needs no lower-cased copy.
    if path.contains('%') {
        let lower = path.to_ascii_lowercase();
        for bad in [
            "%2e", "%2f", "%5c", "%00", "%252e", "%252f", "%255c", "%2500",
        ] {
            if lower.contains(bad) {
                return Err("encoded dot, slash, backslash or NUL");
            }
        }
    }
    // A `;` path parameter hides a dot segment from us but not from upstreams that strip it
    // first (Tomcat reads `/a/..;/b` as `/b`).
    if path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(seg))
        .any(reads_as_dot_segment)
    {
        return Err("dot segment");
    }
    if path.contains('\0') {
        return Err("NUL");
    }
    Ok(())
}

/// `.` or `..`, also as servers that trim whitespace (IIS, .NET: `.. `) or normalise Unicode
/// compatibility forms (NFKC: `．`, `﹒`, `․` are `.`, `‥` is `..`) would read the segment.
fn reads_as_dot_segment(seg: &str) -> bool {
    if seg == "." || seg == ".." {
        return true;
    }
    let trimmed = seg.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() || !trimmed.chars().all(|c| dots(c) > 0) {
        return false;
    }
    matches!(trimmed.chars().map(dots).sum::<usize>(), 1 | 2)
}

/// How many `.` a character is under NFKC (0: not a dot).
fn dots(c: char) -> usize {
    match c {
        '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => 1,
        '\u{2025}' => 2,
        _ => 0,
    }
}

/// Percent-decoding as an upstream might do it: `%XX` escapes decoded, anything else kept
/// (`check_path` has refused malformed escapes in the raw path; a decoded form may have new
/// ones, which the next round keeps). `None` if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits: at most 0xff.
                out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::{check_framing, check_path, host_matches_authority};

    #[test]
    fn ambiguous_framing_is_refused() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    http::HeaderValue::from_str(v).expect("value"),
                );
            }
            m
        };
        for bad in [
            h(&[("host", "a.example"), ("host", "b.example")]),
            h(&[("host", "user@a.example")]),
            h(&[("host", "a example")]),
            h(&[("transfer-encoding", "chunked"), ("content-length", "4")]),
        ] {
            assert!(check_framing(&bad).is_err(), "{bad:?}");
        }
        for ok in [
            h(&[]),
            h(&[("host", "a.example:8080")]),
            h(&[("host", "[::1]:8080"), ("content-length", "4")]),
            h(&[("transfer-encoding", "chunked")]),
        ] {
            assert!(check_framing(&ok).is_ok(), "{ok:?}");
        }
    }

    /// RFC 9113 §8.3.1 compares the entities named, after RFC 3986 §6.2 normalisation: case,
    /// and a default port written or not.
    #[test]
    fn host_and_authority_are_compared_as_entities() {
        let req = |uri: &str, host: &str| {
            let mut r = axum::extract::Request::new(axum::body::Body::empty());
            *r.version_mut() = http::Version::HTTP_2;
            *r.uri_mut() = uri.parse().expect("uri");
            r.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_str(host).expect("host"),
            );
            r
        };
        for (uri, host) in [
            ("https://a.example/x", "a.example"),
            ("https://a.example/x", "A.Example"),
            ("https://a.example/x", "a.example:443"),
            ("https://a.example:443/x", "a.example"),
            ("http://a.example/x", "a.example:80"),
            ("https://a.example:8443/x", "a.example:8443"),
            ("https://[::1]/x", "[::1]:443"),
        ] {
            assert!(host_matches_authority(&req(uri, host)), "{uri} {host}");
        }
        for (uri, host) in [
            ("https://a.example/x", "b.example"),
            ("https://a.example/x", "a.example:8443"),
            ("https://a.example:8443/x", "a.example"),
            ("http://a.example/x", "a.example:443"),
        ] {
            assert!(!host_matches_authority(&req(uri, host)), "{uri} {host}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        for p in [
            "/api/orders/../admin",
            "/api/orders/./x",
            "/api/orders/..",
            "/api/orders/%2e%2e/admin",
            "/api/orders/%2E%2E/admin",
            "/api/orders/.%2e/admin",
            "/api/orders/%2fadmin",
            "/api/orders%2F..%2Fadmin",
            "/api/orders/..%5cadmin",
            "/api/orders/..\\admin",
            "/api/orders/%252e%252e/admin",
            "/api/orders/%00",
            "/api/orders/%25%32%65%25%32%65/admin",
            "/api/orders/%25%32%66admin",
            "/api/orders/%25%35%63admin",
            "/api/orders/%25%30%30",
            "/api/orders/..;/admin",
            "/api/orders/.;x=y/admin",
            "relative",
            "//evil.example/x",
            "/api/orders//admin",
            "/api/orders/%zz",
            "/api/orders/%u002e%u002e/admin",
            "/api/orders/%",
            "/api/orders/%c0%ae%c0%ae/admin",
            "/api/orders/%e0%80%ae%e0%80%ae/admin",
            "/api/orders/%ff",
            "/api/orders/..%20/admin",
            "/api/orders/%20../admin",
            "/api/orders/%09../admin",
            "/api/orders/%ef%bc%8e%ef%bc%8e/admin",
            "/api/orders/%e2%80%a5/admin",
            "/api/orders/%ef%b9%92/admin",
        ] {
            assert!(check_path(p).is_err(), "{p} must be refused");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/",
            "/api/orders",
            "/api/orders/42",
            "/api/orders/a.b/c..d",
            "/api/x%20y",
            "/api/orders/",
            "/api/orders/1;v=2",
            "/api/caf%C3%A9",
            "/api/orders/...",
            "/api/orders/.well-known",
            "/api/orders/%E2%80%A5x",
            "/api/orders/%25",
        ] {
            assert!(check_path(p).is_ok(), "{p} must pass");
        }
    }
}
