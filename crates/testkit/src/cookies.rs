//! A small, strict cookie jar in the spirit of RFC 6265 / RFC 6265bis, as a
//! current Chromium applies it, for the test [`Browser`](crate::browser::Browser).
//!
//! What it does:
//! - parses `Set-Cookie` (name, value, `Expires`, `Max-Age`, `Domain`, `Path`,
//!   `Secure`, `HttpOnly`, `SameSite`), with `Max-Age` taking precedence over
//!   `Expires`, and deletes a cookie when it arrives already expired
//!   (`Max-Age=0`, an `Expires` in the past);
//! - host-only cookies (no `Domain`) and domain cookies (`Domain=` the host or
//!   a parent of it; for IP addresses only the address itself);
//! - by default cookies are also scoped to the **port** that set them (see
//!   [`PortScope`]): a test that runs an IdP and a gateway on two ports of
//!   127.0.0.1 keeps their cookies apart. Real browsers ignore the port; use
//!   [`PortScope::IgnorePort`] to get that behaviour;
//! - treats loopback (`127.0.0.0/8`, `[::1]`, `localhost`, `*.localhost`) as a
//!   secure context, like Chromium and Firefox do: `Secure`, `__Secure-` and
//!   `__Host-` cookies are accepted from, and sent to, `http://127.0.0.1` and
//!   `http://localhost`;
//! - enforces the cookie prefixes: `__Secure-` needs `Secure` and a secure
//!   origin; `__Host-` needs that plus no `Domain` and `Path=/`;
//! - rejects `SameSite=None` without `Secure`;
//! - on sending: domain and path match, `Secure` only to secure origins,
//!   expiry, `SameSite` (see [`SameSiteContext`]), ordered by longest path
//!   first, then oldest first.
//!
//! What it leaves out: the public suffix list (sites are approximated as the
//! last two labels of a name), the `Secure` cookie "leave alone" rule for
//! insecure origins, cookie size limits and partitioned cookies.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use url::{Host, Url};

/// The `SameSite` attribute of a stored cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (requires `Secure`).
    None,
    /// No (or an unrecognised) `SameSite` attribute: treated as `Lax`, as
    /// Chromium does.
    Default,
}

/// How a request relates to the site that caused it, for `SameSite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSiteContext {
    /// Same-site request (or a request typed into the address bar): every
    /// cookie may be sent.
    SameSite,
    /// Cross-site top-level navigation with a safe method (GET/HEAD): `Lax`,
    /// default and `None` cookies are sent, `Strict` ones are not.
    CrossSiteLaxAllowed,
    /// Any other cross-site request (e.g. a cross-site form POST): only
    /// `SameSite=None` cookies are sent.
    CrossSite,
}

/// Whether cookies are scoped to the port of the origin that set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortScope {
    /// A cookie is only sent back to the port that set it (the default: keeps
    /// an IdP and a gateway on two ports of one host apart).
    #[default]
    PerPort,
    /// Like real browsers: cookies ignore the port.
    IgnorePort,
}

/// One stored cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value (as sent, not decoded).
    pub value: String,
    /// The host (host-only cookie) or the `Domain` (domain cookie), lowercase.
    pub domain: String,
    /// `true` when the cookie had no `Domain` attribute.
    pub host_only: bool,
    /// The port of the origin that set the cookie.
    pub port: u16,
    /// The cookie path (the `Path` attribute or the default path).
    pub path: String,
    /// `true` when the `Path` attribute was present.
    pub path_attribute: bool,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`.
    pub same_site: SameSite,
    /// Expiry; `None` for a session cookie.
    pub expires: Option<SystemTime>,
    /// When it was first stored (kept across updates, as RFC 6265 says).
    pub created: SystemTime,
}

impl Cookie {
    /// `name=value`.
    pub fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    /// `true` if the cookie has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Why a `Set-Cookie` header was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieRejected {
    /// The header has no `name=value` pair, or an empty name.
    Malformed,
    /// The URL has no host or is not http(s).
    UnsupportedUrl,
    /// `Domain` does not cover the request host.
    DomainMismatch(String),
    /// `Secure` (or a `__Secure-`/`__Host-` prefix) from a non-secure origin.
    InsecureOrigin,
    /// `__Secure-` without `Secure`.
    SecurePrefix,
    /// `__Host-` without `Secure`, with `Domain`, or without `Path=/`.
    HostPrefix,
    /// `SameSite=None` without `Secure`.
    SameSiteNoneWithoutSecure,
}

impl fmt::Display for CookieRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => write!(f, "malformed Set-Cookie"),
            Self::UnsupportedUrl => write!(f, "cookies need an http(s) URL with a host"),
            Self::DomainMismatch(d) => write!(f, "Domain={d} does not match the request host"),
            Self::InsecureOrigin => write!(f, "Secure cookie from a non-secure origin"),
            Self::SecurePrefix => write!(f, "__Secure- cookie without Secure"),
            Self::HostPrefix => write!(f, "__Host- cookie needs Secure, Path=/ and no Domain"),
            Self::SameSiteNoneWithoutSecure => write!(f, "SameSite=None without Secure"),
        }
    }
}

impl std::error::Error for CookieRejected {}

/// What happened to a `Set-Cookie` that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored (new or replacing an older cookie with the same name, domain
    /// and path).
    Stored,
    /// It arrived expired: any matching cookie was deleted.
    Deleted,
}

/// The cookie jar.
#[derive(Debug, Clone, Default)]
pub struct CookieJar {
    cookies: Vec<Cookie>,
    port_scope: PortScope,
}

/// The parts of a URL that cookies care about.
struct Origin {
    host: String,
    is_ip: bool,
    port: u16,
    path: String,
    secure: bool,
}

fn origin_of(url: &Url) -> Result<Origin, CookieRejected> {
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(CookieRejected::UnsupportedUrl);
    }
    let (host, is_ip) = match url.host() {
        Some(Host::Domain(d)) => (d.trim_end_matches('.').to_ascii_lowercase(), false),
        Some(Host::Ipv4(ip)) => (ip.to_string(), true),
        Some(Host::Ipv6(ip)) => (ip.to_string(), true),
        None => return Err(CookieRejected::UnsupportedUrl),
    };
    let port = url.port_or_known_default().unwrap_or(0);
    let secure = scheme == "https" || is_loopback_host(&host);
    Ok(Origin {
        host,
        is_ip,
        port,
        path: url.path().to_owned(),
        secure,
    })
}

/// `true` for hosts that browsers treat as potentially trustworthy even over
/// plain http: `localhost`, `*.localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// The site (scheme + approximated registrable domain) of a URL, for
/// `SameSite` decisions. Without a public suffix list, the registrable domain
/// of a name is approximated as its last two labels; IP addresses are their
/// own site. Ports never matter.
pub fn site_of(url: &Url) -> Option<(String, String)> {
    let host = match url.host()? {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let labels: Vec<&str> = d.split('.').collect();
            if labels.len() <= 2 {
                d
            } else {
                labels[labels.len() - 2..].join(".")
            }
        }
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    Some((url.scheme().to_owned(), host))
}

/// `true` when two URLs are same-site (schemeful, ports ignored).
pub fn same_site(a: &Url, b: &Url) -> bool {
    match (site_of(a), site_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// RFC 6265 5.1.3 domain-match.
fn domain_match(host: &str, domain: &str, host_is_ip: bool) -> bool {
    if host == domain {
        return true;
    }
    !host_is_ip && host.len() > domain.len() && host.ends_with(domain) && {
        let cut = host.len() - domain.len();
        host.as_bytes().get(cut.wrapping_sub(1)) == Some(&b'.')
    }
}

/// RFC 6265 5.1.4 path-match.
pub fn path_match(request_path: &str, cookie_path: &str) -> bool {
    if request_path == cookie_path {
        return true;
    }
    request_path.starts_with(cookie_path)
        && (cookie_path.ends_with('/')
            || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/'))
}

/// RFC 6265 5.1.4 default-path.
pub fn default_path(request_path: &str) -> String {
    if !request_path.starts_with('/') {
        return "/".to_owned();
    }
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

struct Parsed {
    name: String,
    value: String,
    expires: Option<SystemTime>,
    max_age: Option<i64>,
    domain: Option<String>,
    path: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
}

fn parse_set_cookie(header: &str) -> Result<Parsed, CookieRejected> {
    let mut parts = header.split(';');
    let pair = parts.next().unwrap_or_default();
    let (name, value) = pair.split_once('=').ok_or(CookieRejected::Malformed)?;
    let name = name.trim();
    let value = value.trim();
    if name.is_empty() {
        return Err(CookieRejected::Malformed);
    }
    // RFC 6265: double quotes around the value are part of the value.
    let mut parsed = Parsed {
        name: name.to_owned(),
        value: value.to_owned(),
        expires: None,
        max_age: None,
        domain: None,
        path: None,
        secure: false,
        http_only: false,
        same_site: SameSite::Default,
    };
    for attr in parts {
        let (key, val) = match attr.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (attr.trim(), ""),
        };
        match key.to_ascii_lowercase().as_str() {
            "expires" => {
                if let Some(t) = parse_cookie_date(val) {
                    parsed.expires = Some(t);
                }
            }
            "max-age" => {
                let digits = val.strip_prefix('-').unwrap_or(val);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    // Saturate absurd values instead of failing.
                    parsed.max_age = Some(val.parse::<i64>().unwrap_or(if val.starts_with('-') {
                        i64::MIN
                    } else {
                        i64::MAX
                    }));
                }
            }
            "domain" => {
                let d = val.trim_start_matches('.').to_ascii_lowercase();
                if !d.is_empty() {
                    parsed.domain = Some(d);
                }
            }
            "path" => {
                parsed.path = if val.starts_with('/') {
                    Some(val.to_owned())
                } else {
                    None
                };
            }
            "secure" => parsed.secure = true,
            "httponly" => parsed.http_only = true,
            "samesite" => {
                parsed.same_site = match val.to_ascii_lowercase().as_str() {
                    "strict" => SameSite::Strict,
                    "lax" => SameSite::Lax,
                    "none" => SameSite::None,
                    _ => SameSite::Default,
                }
            }
            _ => {}
        }
    }
    Ok(parsed)
}

fn has_prefix_ci(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

impl CookieJar {
    /// An empty jar with [`PortScope::PerPort`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty jar with the given port scoping.
    pub fn with_port_scope(port_scope: PortScope) -> Self {
        Self {
            cookies: Vec::new(),
            port_scope,
        }
    }

    /// The jar's port scoping.
    pub fn port_scope(&self) -> PortScope {
        self.port_scope
    }

    /// Processes one `Set-Cookie` header value received from `url`, now.
    pub fn store(&mut self, url: &Url, set_cookie: &str) -> Result<Stored, CookieRejected> {
        self.store_at(url, set_cookie, SystemTime::now())
    }

    /// Processes one `Set-Cookie` header value received from `url` at `now`.
    pub fn store_at(
        &mut self,
        url: &Url,
        set_cookie: &str,
        now: SystemTime,
    ) -> Result<Stored, CookieRejected> {
        let origin = origin_of(url)?;
        let p = parse_set_cookie(set_cookie)?;

        let (domain, host_only) = match &p.domain {
            Some(d) => {
                if !domain_match(&origin.host, d, origin.is_ip) {
                    return Err(CookieRejected::DomainMismatch(d.clone()));
                }
                (d.clone(), false)
            }
            None => (origin.host.clone(), true),
        };
        if p.secure && !origin.secure {
            return Err(CookieRejected::InsecureOrigin);
        }
        if has_prefix_ci(&p.name, "__Secure-") && (!p.secure || !origin.secure) {
            return Err(if p.secure {
                CookieRejected::InsecureOrigin
            } else {
                CookieRejected::SecurePrefix
            });
        }
        if has_prefix_ci(&p.name, "__Host-")
            && (!p.secure || !origin.secure || p.domain.is_some() || p.path.as_deref() != Some("/"))
        {
            return Err(CookieRejected::HostPrefix);
        }
        if p.same_site == SameSite::None && !p.secure {
            return Err(CookieRejected::SameSiteNoneWithoutSecure);
        }

        let expires = match (p.max_age, p.expires) {
            (Some(secs), _) if secs <= 0 => Some(UNIX_EPOCH),
            (Some(secs), _) => Some(
                u64::try_from(secs)
                    .ok()
                    .and_then(|s| now.checked_add(Duration::from_secs(s)))
                    .unwrap_or_else(far_future),
            ),
            (None, e) => e,
        };
        let path_attribute = p.path.is_some();
        let path = p.path.unwrap_or_else(|| default_path(&origin.path));
        let port = origin.port;
        let port_scope = self.port_scope;
        let existing = self.cookies.iter().position(|c| {
            c.name == p.name
                && c.domain == domain
                && c.host_only == host_only
                && c.path == path
                && (port_scope == PortScope::IgnorePort || c.port == port)
        });
        let created = existing.map_or(now, |i| self.cookies[i].created);
        if let Some(i) = existing {
            self.cookies.remove(i);
        }
        let cookie = Cookie {
            name: p.name,
            value: p.value,
            domain,
            host_only,
            port,
            path,
            path_attribute,
            secure: p.secure,
            http_only: p.http_only,
            same_site: p.same_site,
            expires,
            created,
        };
        if cookie.is_expired(now) {
            return Ok(Stored::Deleted);
        }
        self.cookies.push(cookie);
        Ok(Stored::Stored)
    }

    /// Puts a cookie into the jar as is, bypassing every check (to plant a
    /// forged or foreign cookie). Replaces a cookie with the same name,
    /// domain, path and port.
    pub fn insert(&mut self, cookie: Cookie) {
        self.cookies.retain(|c| {
            !(c.name == cookie.name
                && c.domain == cookie.domain
                && c.path == cookie.path
                && c.port == cookie.port)
        });
        self.cookies.push(cookie);
    }

    /// The cookies that a request to `url` carries, in sending order.
    pub fn matching(&self, url: &Url, context: SameSiteContext, now: SystemTime) -> Vec<&Cookie> {
        let Ok(origin) = origin_of(url) else {
            return Vec::new();
        };
        let mut out: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| !c.is_expired(now))
            .filter(|c| {
                if c.host_only {
                    c.domain == origin.host
                } else {
                    domain_match(&origin.host, &c.domain, origin.is_ip)
                }
            })
            .filter(|c| self.port_scope == PortScope::IgnorePort || c.port == origin.port)
            .filter(|c| path_match(&origin.path, &c.path))
            .filter(|c| !c.secure || origin.secure)
            .filter(|c| match context {
                SameSiteContext::SameSite => true,
                SameSiteContext::CrossSiteLaxAllowed => c.same_site != SameSite::Strict,
                SameSiteContext::CrossSite => c.same_site == SameSite::None,
            })
            .collect();
        out.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.created.cmp(&b.created))
        });
        out
    }

    /// The `Cookie` header value for a request to `url`, if any cookie
    /// matches.
    pub fn header_for(&self, url: &Url, context: SameSiteContext) -> Option<String> {
        let cookies = self.matching(url, context, SystemTime::now());
        if cookies.is_empty() {
            None
        } else {
            Some(
                cookies
                    .iter()
                    .map(|c| c.pair())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }

    /// All unexpired cookies.
    pub fn all(&self) -> Vec<&Cookie> {
        let now = SystemTime::now();
        self.cookies.iter().filter(|c| !c.is_expired(now)).collect()
    }

    /// The most recently stored unexpired cookie called `name`, any host.
    pub fn get(&self, name: &str) -> Option<&Cookie> {
        let now = SystemTime::now();
        self.cookies
            .iter()
            .rev()
            .find(|c| c.name == name && !c.is_expired(now))
    }

    /// Removes every cookie called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.cookies.len();
        self.cookies.retain(|c| c.name != name);
        before - self.cookies.len()
    }

    /// Removes every cookie.
    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// Number of unexpired cookies.
    pub fn len(&self) -> usize {
        self.all().len()
    }

    /// `true` when there is no unexpired cookie.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn far_future() -> SystemTime {
    // 9999-12-31, well inside SystemTime's range on every platform.
    UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// RFC 6265 5.1.1 cookie-date parsing (accepts IMF-fixdate, RFC 850 and
/// asctime forms and the usual sloppy variants).
pub fn parse_cookie_date(input: &str) -> Option<SystemTime> {
    let is_delim = |c: char| {
        c == '\t'
            || (' '..='/').contains(&c)
            || (';'..='@').contains(&c)
            || ('['..='`').contains(&c)
            || ('{'..='~').contains(&c)
    };
    let mut time: Option<(u32, u32, u32)> = None;
    let mut day: Option<u32> = None;
    let mut month: Option<u32> = None;
    let mut year: Option<i64> = None;

    for token in input.split(is_delim).filter(|t| !t.is_empty()) {
        if time.is_none()
            && let Some(t) = parse_time_token(token)
        {
            time = Some(t);
            continue;
        }
        if day.is_none()
            && let Some(d) = leading_digits(token, 1, 2)
        {
            day = Some(d);
            continue;
        }
        if month.is_none() && token.len() >= 3 {
            const MONTHS: [&str; 12] = [
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ];
            let prefix = token[..3].to_ascii_lowercase();
            if let Some(i) = MONTHS.iter().position(|m| *m == prefix) {
                month = Some(u32::try_from(i).ok()? + 1);
                continue;
            }
        }
        if year.is_none()
            && let Some(y) = leading_digits(token, 2, 4)
        {
            year = Some(i64::from(y));
            continue;
        }
    }
    let (h, mi, s) = time?;
    let day = day?;
    let month = month?;
    let mut year = year?;
    if (70..=99).contains(&year) {
        year += 1900;
    } else if (0..=69).contains(&year) {
        year += 2000;
    }
    if !(1..=31).contains(&day) || year < 1601 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// 1-`max` leading digits, followed by a non-digit or the end.
fn leading_digits(token: &str, min: usize, max: usize) -> Option<u32> {
    let n = token.bytes().take_while(u8::is_ascii_digit).count();
    if n < min || n > max {
        return None;
    }
    token[..n].parse().ok()
}

fn parse_time_token(token: &str) -> Option<(u32, u32, u32)> {
    let mut it = token.splitn(3, ':');
    let h = leading_digits(it.next()?, 1, 2)?;
    let m = leading_digits(it.next()?, 1, 2)?;
    let s = leading_digits(it.next()?, 1, 2)?;
    Some((h, m, s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cookie_dates() {
        assert_eq!(
            parse_cookie_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(at(0))
        );
        // 2015-10-21 07:28:00 UTC
        assert_eq!(
            parse_cookie_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(at(1_445_412_480))
        );
        assert_eq!(
            parse_cookie_date("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(at(1_445_412_480))
        );
        assert_eq!(
            parse_cookie_date("Wed Oct 21 07:28:00 2015"),
            Some(at(1_445_412_480))
        );
        assert_eq!(parse_cookie_date("not a date"), None);
        assert_eq!(parse_cookie_date("Wed, 32 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(default_path("/"), "/");
        assert_eq!(default_path("/bff/login"), "/bff");
        assert_eq!(default_path("/a/b/"), "/a/b");
        assert_eq!(default_path(""), "/");
        assert!(path_match("/bff/login", "/bff"));
        assert!(path_match("/bff", "/bff"));
        assert!(path_match("/bff/", "/bff/"));
        assert!(!path_match("/bffx", "/bff"));
        assert!(!path_match("/", "/bff"));
    }

    #[test]
    fn domain_matching() {
        assert!(domain_match("a.example.test", "example.test", false));
        assert!(!domain_match("aexample.test", "example.test", false));
        assert!(domain_match("127.0.0.1", "127.0.0.1", true));
        assert!(!domain_match("1.127.0.0.1", "127.0.0.1", true));
    }
}
