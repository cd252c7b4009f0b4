//! Attack suite, open redirects: a table of `returnTo` payloads (schemes, `//`, `/\`, control and
//! white space, percent- and double-encoding, userinfo, Unicode look-alikes, dot segments, very
//! long values), each carried through a real login at the real OpenID Provider. The assertion is
//! on the `Location` the callback finally sends the browser to: same origin, path only, also
//! after a later hop percent-decodes it once or twice. Logout takes no redirect target at all.

mod common;

use common::{Options, Stack};
use http::Method;
use testkit::browser::Browser;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Refused: the browser lands on `/`.
    Root,
    /// Harmless: kept exactly.
    Same,
    /// Kept in some encoded form; only the generic checks apply.
    Safe,
}

use Want::{Root, Safe, Same};

fn cases() -> Vec<(&'static str, String, Want)> {
    let s = |v: &str| v.to_owned();
    vec![
        // Controls: ordinary paths survive, or the rejections below prove nothing.
        ("plain path", s("/home"), Same),
        ("path, query and fragment", s("/a/b?c=d#e"), Same),
        ("encoded space in the query", s("/orders/42?x=%20y"), Same),
        ("at sign in the path", s("/@evil.example"), Same),
        ("leading dot in a segment", s("/.evil.example"), Same),
        (
            "foreign URL in the query",
            s("/?next=https://evil.example"),
            Same,
        ),
        ("2 KiB path", format!("/{}", "a".repeat(2047)), Same),
        // Schemes.
        ("javascript:", s("javascript:alert(1)"), Root),
        ("JaVaScRiPt: mixed case", s("JaVaScRiPt:alert(1)"), Root),
        ("javascript: after a space", s(" javascript:alert(1)"), Root),
        ("javascript: after a tab", s("\tjavascript:alert(1)"), Root),
        ("java<TAB>script:", s("java\tscript:alert(1)"), Root),
        (
            "javascript: encoded colon",
            s("javascript%3Aalert(1)"),
            Root,
        ),
        (
            "data: HTML",
            s("data:text/html,<script>alert(1)</script>"),
            Root,
        ),
        (
            "data: base64",
            s("data:text/html;base64,PHNjcmlwdD4="),
            Root,
        ),
        ("vbscript:", s("vbscript:msgbox(1)"), Root),
        ("file:", s("file:///etc/passwd"), Root),
        ("blob:", s("blob:https://evil.example/uuid"), Root),
        ("https absolute", s("https://evil.example"), Root),
        ("http absolute with path", s("http://evil.example/x"), Root),
        ("upper-case scheme", s("HTTPS://EVIL.EXAMPLE"), Root),
        ("scheme without slashes", s("https:evil.example"), Root),
        ("scheme with one slash", s("https:/evil.example"), Root),
        ("ftp:", s("ftp://evil.example"), Root),
        // Protocol-relative and backslashes.
        ("//host", s("//evil.example"), Root),
        ("//host/", s("//evil.example/"), Root),
        ("//host:port", s("//evil.example:443"), Root),
        ("///host", s("///evil.example"), Root),
        ("////host", s("////evil.example"), Root),
        ("/\\host", s("/\\evil.example"), Root),
        ("\\/host", s("\\/evil.example"), Root),
        ("\\\\host", s("\\\\evil.example"), Root),
        ("/\\/host", s("/\\/evil.example"), Root),
        ("/ backslash later", s("/a\\..\\..\\evil.example"), Root),
        // White space and control characters.
        ("/<TAB>/host", s("/\t/evil.example"), Root),
        ("/<LF>/host", s("/\n/evil.example"), Root),
        ("/<CR><LF>/host", s("/\r\n/evil.example"), Root),
        ("<TAB>//host", s("\t//evil.example"), Root),
        ("<LF>//host", s("\n//evil.example"), Root),
        ("space then //host", s(" //evil.example"), Root),
        ("/<space>/host", s("/ /evil.example"), Root),
        ("/<NUL>/host", s("/\0/evil.example"), Root),
        ("/<VT>/host", s("/\u{b}/evil.example"), Root),
        ("/<FF>/host", s("/\u{c}/evil.example"), Root),
        ("/<NEL>/host", s("/\u{85}/evil.example"), Root),
        ("header injection", s("/\r\nSet-Cookie: x=y"), Root),
        (
            "Location injection",
            s("/x\r\nLocation: https://evil.example"),
            Root,
        ),
        // Percent- and double-encoding.
        ("%2F%2Fhost", s("%2F%2Fevil.example"), Root),
        ("%2f%2fhost lower case", s("%2f%2fevil.example"), Root),
        ("/%2F/host", s("/%2F/evil.example"), Root),
        ("/%2f%2fhost", s("/%2f%2fevil.example"), Root),
        ("/%5Chost", s("/%5Cevil.example"), Root),
        ("/%5chost lower case", s("/%5cevil.example"), Root),
        ("%5C%5Chost", s("%5C%5Cevil.example"), Root),
        ("/%09/host", s("/%09/evil.example"), Root),
        ("/%0a/host", s("/%0a/evil.example"), Root),
        ("/%0d%0a header", s("/%0d%0aSet-Cookie:x=y"), Root),
        ("/%00/host", s("/%00/evil.example"), Root),
        ("/%252F/host double encoded", s("/%252F/evil.example"), Root),
        ("/%255Chost double encoded", s("/%255Cevil.example"), Root),
        ("/%2509/host double encoded", s("/%2509/evil.example"), Root),
        (
            "/%25252F/host triple encoded",
            s("/%25252F/evil.example"),
            Safe,
        ),
        (
            "/%E2%80%8B/host encoded zero-width space",
            s("/%E2%80%8B/evil.example"),
            Root,
        ),
        // Userinfo tricks.
        (
            "https://good@evil",
            s("https://localhost@evil.example"),
            Root,
        ),
        ("//good@evil", s("//localhost@evil.example"), Root),
        (
            "http://good:port@evil",
            s("http://localhost:8080@evil.example/"),
            Root,
        ),
        ("//evil%2F@good", s("//evil.example%2F@localhost"), Root),
        // Unicode look-alikes.
        ("fullwidth ／／", s("／／evil.example"), Root),
        ("/ then fullwidth ／", s("/／evil.example"), Root),
        ("fullwidth ＼", s("/＼evil.example"), Root),
        ("division slash ∕∕", s("∕∕evil.example"), Root),
        ("/ then division slash", s("/∕evil.example"), Root),
        ("big solidus ⧸", s("/⧸evil.example"), Root),
        ("zero-width space", s("/\u{200B}/evil.example"), Root),
        ("byte order mark", s("/\u{FEFF}/evil.example"), Root),
        ("line separator", s("/\u{2028}/evil.example"), Root),
        ("right-to-left override", s("/\u{202E}elpmaxe.live//"), Root),
        ("ideographic full stop", s("/evil\u{3002}example"), Safe),
        ("fullwidth letters", s("/ｅｖｉｌ"), Safe),
        // Dot segments that resolve to a // path on our host.
        ("/..//host", s("/..//evil.example"), Root),
        ("/.//host", s("/.//evil.example"), Root),
        ("/a/../..//host", s("/a/../..//evil.example"), Root),
        ("/%2e%2e//host", s("/%2e%2e//evil.example"), Root),
        // Not a path at all.
        ("empty", s(""), Root),
        ("bare host", s("evil.example"), Root),
        ("query only", s("?next=//evil.example"), Root),
        ("fragment only", s("#//evil.example"), Root),
        ("@host", s("@evil.example"), Root),
        // Very long.
        ("path over 2 KiB", format!("/{}", "a".repeat(5000)), Root),
        (
            "long //host",
            format!("//evil.example/{}", "a".repeat(3000)),
            Root,
        ),
    ]
}

/// One percent-decoding pass (as a later hop might do), lossy.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The browser will go to `loc` from `base`: it must stay on `base`'s origin with a path that
/// does not itself look like another host, now or after one or two decodings.
fn assert_path_only(name: &str, loc: &str, base: &Url) {
    for (stage, l) in [
        ("as sent", loc.to_owned()),
        ("decoded once", decode(loc)),
        ("decoded twice", decode(&decode(loc))),
    ] {
        assert!(l.starts_with('/'), "{name} ({stage}): {l:?}");
        assert!(
            !l.starts_with("//") && !l.starts_with("/\\") && !l.contains('\\'),
            "{name} ({stage}): {l:?}"
        );
        if stage == "as sent" {
            assert!(
                !l.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{name}: {l:?}"
            );
        }
        let resolved = base.join(&l).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resolved.origin(), base.origin(), "{name} ({stage}): {l:?}");
        assert!(
            !resolved.path().starts_with("//"),
            "{name} ({stage}): resolves to path {}",
            resolved.path()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_payloads_never_leave_the_origin_after_a_real_login() {
    let stack = Stack::start_with(Options {
        extra_toml: "[rate_limits]\nlogin_per_ip = \"100000/min\"\n".into(),
        ..Options::default()
    })
    .await;
    let base = Url::parse(&stack.base).expect("base");
    let cases = cases();
    assert!(cases.len() >= 60, "{} rows", cases.len());
    let mut seen = Vec::new();
    for (name, value, want) in &cases {
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let browser = Browser::new();
        let outcome = browser
            .login_via_form(
                &stack.url(&format!("/bff/login?returnTo={encoded}")),
                stack.idp.username(),
                stack.idp.password(),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: login: {e:#}"));
        let resp = &outcome.callback_response;
        seen.push(common::leak::dump(resp));
        assert_eq!(resp.status.as_u16(), 302, "{name}: {}", resp.text());
        let locs = resp.header_all("location");
        assert_eq!(locs.len(), 1, "{name}: {locs:?}");
        let loc = locs[0];
        assert_path_only(name, loc, &base);
        match want {
            Root => assert_eq!(loc, "/", "{name}"),
            Same => assert_eq!(loc, value.as_str(), "{name}"),
            Safe => {}
        }
        // The login really completed: the redirect carries the session.
        assert!(
            browser.cookie(common::COOKIE).is_some(),
            "{name}: no session"
        );
    }
    // No token rides along in any redirect, header or body of all these logins, nor in the logs.
    let secrets = common::leak::secrets(&stack.idp).await;
    let hay: Vec<(&str, &[u8])> = seen
        .iter()
        .map(|s| ("a callback response", s.as_bytes()))
        .collect();
    common::leak::assert_absent(&secrets, &hay);
    common::leak::assert_logs_clean(&stack.idp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_takes_no_redirect_target_from_the_request() {
    let stack = Stack::start().await;
    let base = Url::parse(&stack.base).expect("base");
    // (name, query appended to POST /bff/logout)
    let cases = [
        ("returnTo //host", "?returnTo=//evil.example"),
        (
            "post_logout_redirect_uri",
            "?post_logout_redirect_uri=https://evil.example/",
        ),
        ("redirect_uri", "?redirect_uri=https://evil.example/"),
        (
            "next",
            "?next=https://evil.example/&url=https://evil.example/",
        ),
        ("encoded //host", "?returnTo=%2F%2Fevil.example"),
    ];
    for (name, query) in cases {
        let alice = Browser::new();
        stack.login(&alice).await;
        let csrf = stack.csrf(&alice).await;
        let r = alice
            .request(
                Method::POST,
                &stack.url(&format!("/bff/logout{query}")),
                &[("x-csrf-token", &csrf)],
                "",
            )
            .await
            .expect(name);
        assert!(r.status.is_success(), "{name}: {} {}", r.status, r.text());
        assert!(
            r.header("location")
                .is_none_or(|l| l.starts_with('/') && !l.starts_with("//")),
            "{name}"
        );
        let body = r.text();
        assert!(!body.contains("evil"), "{name}: {body}");
        // Whatever end-session URL comes back sends the browser back to our own origin only.
        if let Ok(v) = r.json() {
            for (k, val) in v.as_object().into_iter().flatten() {
                let Some(u) = val.as_str().and_then(|s| Url::parse(s).ok()) else {
                    continue;
                };
                for (p, target) in u.query_pairs() {
                    if p == "post_logout_redirect_uri" {
                        let t = Url::parse(&target).expect("absolute");
                        assert_eq!(t.origin(), base.origin(), "{name}: {k}");
                    }
                }
            }
        }
    }
}
