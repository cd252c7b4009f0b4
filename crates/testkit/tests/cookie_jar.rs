//! The cookie jar's rules, without any server.

use std::time::{Duration, SystemTime};

use testkit::cookies::{CookieJar, CookieRejected, PortScope, SameSite, SameSiteContext, Stored};
use url::Url;

fn u(s: &str) -> Url {
    Url::parse(s).expect("URL")
}

fn header(jar: &CookieJar, url: &str) -> Option<String> {
    jar.header_for(&u(url), SameSiteContext::SameSite)
}

const GATEWAY: &str = "http://127.0.0.1:8080";

#[test]
fn host_prefixed_session_cookie_is_accepted_over_loopback_http() {
    let mut jar = CookieJar::new();
    let set = "__Host-SessionID=abc; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800";
    assert_eq!(
        jar.store(&u(&format!("{GATEWAY}/bff/callback?code=x")), set),
        Ok(Stored::Stored)
    );
    let c = jar.get("__Host-SessionID").expect("stored");
    assert_eq!(c.value, "abc");
    assert!(c.secure && c.http_only && c.host_only);
    assert_eq!(c.same_site, SameSite::Strict);
    assert_eq!(c.path, "/");
    let left = c
        .expires
        .expect("Max-Age sets an expiry")
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(left > Duration::from_secs(28_700) && left <= Duration::from_secs(28_800));
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/api/x")),
        Some("__Host-SessionID=abc".to_owned())
    );

    // localhost and ::1 are secure contexts too.
    for origin in [
        "http://localhost:3000",
        "http://[::1]:3000",
        "http://app.localhost:1",
    ] {
        let mut jar = CookieJar::new();
        assert_eq!(
            jar.store(&u(&format!("{origin}/")), "__Host-a=1; Secure; Path=/"),
            Ok(Stored::Stored),
            "{origin}"
        );
        assert_eq!(
            header(&jar, &format!("{origin}/x")),
            Some("__Host-a=1".to_owned())
        );
    }
}

#[test]
fn prefixes_and_secure_are_enforced() {
    let mut jar = CookieJar::new();
    let gw = u(&format!("{GATEWAY}/"));
    assert_eq!(
        jar.store(&gw, "__Host-a=1; Path=/"),
        Err(CookieRejected::HostPrefix)
    );
    assert_eq!(
        jar.store(&gw, "__Host-a=1; Secure"),
        Err(CookieRejected::HostPrefix)
    );
    assert_eq!(
        jar.store(&gw, "__Host-a=1; Secure; Path=/app"),
        Err(CookieRejected::HostPrefix)
    );
    assert_eq!(
        jar.store(&gw, "__Host-a=1; Secure; Path=/; Domain=127.0.0.1"),
        Err(CookieRejected::HostPrefix)
    );
    assert_eq!(
        jar.store(&gw, "__host-a=1; Path=/"),
        Err(CookieRejected::HostPrefix)
    );
    assert_eq!(
        jar.store(&gw, "__Secure-b=1"),
        Err(CookieRejected::SecurePrefix)
    );
    assert_eq!(jar.store(&gw, "__Secure-b=1; Secure"), Ok(Stored::Stored));
    assert_eq!(
        jar.store(&gw, "n=1; SameSite=None"),
        Err(CookieRejected::SameSiteNoneWithoutSecure)
    );

    // A non-loopback http origin is not secure.
    let plain = u("http://app.example.test/");
    assert_eq!(
        jar.store(&plain, "s=1; Secure"),
        Err(CookieRejected::InsecureOrigin)
    );
    assert_eq!(
        jar.store(&plain, "__Host-a=1; Secure; Path=/"),
        Err(CookieRejected::InsecureOrigin)
    );
    assert_eq!(
        jar.store(&u("https://app.example.test/"), "s=1; Secure"),
        Ok(Stored::Stored)
    );
    // ... and Secure cookies are not sent to it.
    assert_eq!(header(&jar, "http://app.example.test/"), None);
    assert_eq!(
        header(&jar, "https://app.example.test/"),
        Some("s=1".to_owned())
    );
}

#[test]
fn max_age_zero_and_past_expires_delete() {
    let mut jar = CookieJar::new();
    let gw = u(&format!("{GATEWAY}/"));
    jar.store(
        &gw,
        "__Host-SessionID=abc; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800",
    )
    .expect("stored");
    jar.store(&gw, "other=1; Path=/").expect("stored");
    assert_eq!(jar.len(), 2);
    assert_eq!(
        jar.store(
            &gw,
            "__Host-SessionID=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        ),
        Ok(Stored::Deleted)
    );
    assert!(jar.get("__Host-SessionID").is_none());
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/")),
        Some("other=1".to_owned())
    );

    assert_eq!(
        jar.store(&gw, "other=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        Ok(Stored::Deleted)
    );
    assert!(jar.is_empty());

    // A deletion only hits the cookie with the same path.
    jar.store(&gw, "p=1; Path=/a").expect("stored");
    jar.store(&gw, "p=; Path=/; Max-Age=0").expect("processed");
    assert_eq!(jar.len(), 1);

    // Max-Age wins over Expires.
    jar.store(
        &gw,
        "m=1; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    )
    .expect("stored");
    assert!(jar.get("m").is_some());
    jar.store(
        &gw,
        "m=1; Max-Age=-1; Expires=Fri, 01 Jan 2100 00:00:00 GMT",
    )
    .expect("processed");
    assert!(jar.get("m").is_none());

    // Expiry by time passing.
    let now = SystemTime::now();
    jar.store_at(&gw, "t=1; Max-Age=10", now).expect("stored");
    assert_eq!(
        jar.matching(
            &u(&format!("{GATEWAY}/")),
            SameSiteContext::SameSite,
            now + Duration::from_secs(5)
        )
        .iter()
        .filter(|c| c.name == "t")
        .count(),
        1
    );
    assert_eq!(
        jar.matching(
            &u(&format!("{GATEWAY}/")),
            SameSiteContext::SameSite,
            now + Duration::from_secs(11)
        )
        .iter()
        .filter(|c| c.name == "t")
        .count(),
        0
    );
}

#[test]
fn paths_match_on_segment_boundaries() {
    let mut jar = CookieJar::new();
    let gw = u(&format!("{GATEWAY}/bff/callback"));
    jar.store(&gw, "login=1; Path=/bff").expect("stored");
    jar.store(&gw, "root=1; Path=/").expect("stored");
    jar.store(&gw, "dflt=1").expect("stored"); // default path: /bff

    assert_eq!(
        header(&jar, &format!("{GATEWAY}/bff/login")),
        Some("login=1; dflt=1; root=1".to_owned()),
        "longest path first, then oldest"
    );
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/bff")),
        Some("login=1; dflt=1; root=1".to_owned())
    );
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/bffx")),
        Some("root=1".to_owned())
    );
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/api/bff")),
        Some("root=1".to_owned())
    );

    // Same name, different paths: two cookies.
    jar.store(&gw, "login=2; Path=/").expect("stored");
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/bff/x")),
        Some("login=1; dflt=1; root=1; login=2".to_owned())
    );
    // Replacing keeps the original creation time (and so the order).
    jar.store(&gw, "root=9; Path=/").expect("stored");
    assert_eq!(
        header(&jar, &format!("{GATEWAY}/")),
        Some("root=9; login=2".to_owned())
    );
}

#[test]
fn hosts_ports_and_domains() {
    let mut jar = CookieJar::new();
    jar.store(&u("http://127.0.0.1:1000/"), "a=1; Path=/")
        .expect("stored");
    // Per-port by default.
    assert_eq!(
        header(&jar, "http://127.0.0.1:1000/"),
        Some("a=1".to_owned())
    );
    assert_eq!(header(&jar, "http://127.0.0.1:2000/"), None);
    assert_eq!(header(&jar, "http://localhost:1000/"), None);

    let mut real = CookieJar::with_port_scope(PortScope::IgnorePort);
    real.store(&u("http://127.0.0.1:1000/"), "a=1; Path=/")
        .expect("stored");
    assert_eq!(
        header(&real, "http://127.0.0.1:2000/"),
        Some("a=1".to_owned())
    );
    assert_eq!(header(&real, "http://localhost:1000/"), None);

    // Domain cookies.
    let mut jar = CookieJar::with_port_scope(PortScope::IgnorePort);
    let app = u("https://app.example.test/");
    jar.store(&app, "d=1; Domain=.example.test; Path=/")
        .expect("stored");
    jar.store(&app, "h=1; Path=/").expect("stored");
    assert_eq!(
        header(&jar, "https://api.example.test/"),
        Some("d=1".to_owned())
    );
    assert_eq!(
        header(&jar, "https://app.example.test/"),
        Some("d=1; h=1".to_owned())
    );
    assert!(matches!(
        jar.store(&app, "x=1; Domain=other.test"),
        Err(CookieRejected::DomainMismatch(_))
    ));
    // IP hosts: Domain must be the address itself.
    let ip = u("http://127.0.0.1:1/");
    assert!(matches!(
        jar.store(&ip, "x=1; Domain=0.0.1"),
        Err(CookieRejected::DomainMismatch(_))
    ));
    assert_eq!(jar.store(&ip, "x=1; Domain=127.0.0.1"), Ok(Stored::Stored));
}

#[test]
fn same_site_contexts() {
    let mut jar = CookieJar::new();
    let gw = u(&format!("{GATEWAY}/"));
    jar.store(&gw, "strict=1; Secure; SameSite=Strict; Path=/")
        .expect("stored");
    jar.store(&gw, "lax=1; SameSite=Lax; Path=/")
        .expect("stored");
    jar.store(&gw, "dflt=1; Path=/").expect("stored");
    jar.store(&gw, "none=1; Secure; SameSite=None; Path=/")
        .expect("stored");
    let names = |ctx| {
        jar.matching(&gw, ctx, SystemTime::now())
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(SameSiteContext::SameSite),
        ["strict", "lax", "dflt", "none"]
    );
    assert_eq!(
        names(SameSiteContext::CrossSiteLaxAllowed),
        ["lax", "dflt", "none"]
    );
    assert_eq!(names(SameSiteContext::CrossSite), ["none"]);

    // Site computation: ports never matter, schemes and hosts do.
    use testkit::cookies::same_site;
    assert!(same_site(
        &u("http://127.0.0.1:1/"),
        &u("http://127.0.0.1:2/")
    ));
    assert!(!same_site(
        &u("http://127.0.0.1:1/"),
        &u("http://localhost:1/")
    ));
    assert!(same_site(
        &u("https://a.example.test/"),
        &u("https://b.example.test/")
    ));
    assert!(!same_site(
        &u("http://a.example.test/"),
        &u("https://a.example.test/")
    ));
}

#[test]
fn malformed_headers_are_ignored() {
    let mut jar = CookieJar::new();
    let gw = u(&format!("{GATEWAY}/"));
    assert_eq!(jar.store(&gw, "novalue"), Err(CookieRejected::Malformed));
    assert_eq!(jar.store(&gw, "=v"), Err(CookieRejected::Malformed));
    assert_eq!(
        jar.store(&gw, " spaced = v ; path=/ ; httponly ; max-age=abc"),
        Ok(Stored::Stored)
    );
    let c = jar.get("spaced").expect("stored");
    assert_eq!(c.value, "v");
    assert!(c.http_only);
    assert!(c.expires.is_none(), "invalid Max-Age is ignored");
    assert!(jar.store(&u("ftp://127.0.0.1/"), "a=1").is_err());
}
