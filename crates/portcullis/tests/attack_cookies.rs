//! Attack suite, cookies: the exact session cookie, look-alike and duplicated cookies, session
//! fixation, damaged tickets, and cookie floods against a real `redis-server` store (so "no server
//! state for unauthenticated requests" is counted, not assumed). One named row per payload.

mod common;

use common::{
    COOKIE, Options, Stack,
    raw_http::{exchange, port_of, statuses},
};
use http::Method;
use testkit::{
    browser::Browser,
    redis::{RedisOptions, RedisServer, Reply},
};

async fn redis_stack() -> (RedisServer, Stack) {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis-server");
    let stack = Stack::start_with(Options {
        session_extra: format!(
            "store = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"2s\"",
            redis.url()
        ),
        ..Options::default()
    })
    .await;
    (redis, stack)
}

async fn key_count(redis: &RedisServer) -> i64 {
    redis
        .command(&["DBSIZE"])
        .await
        .expect("DBSIZE")
        .as_int()
        .expect("integer")
}

async fn keys(redis: &RedisServer) -> Vec<String> {
    match redis.command(&["KEYS", "*"]).await.expect("KEYS") {
        Reply::Array(items) => items
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        other => panic!("KEYS answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_has_exactly_the_safe_attributes() {
    let stack = Stack::start().await;
    let alice = Browser::new();
    let outcome = alice
        .login_via_form(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login");
    let set = outcome.callback_response.set_cookies();
    let session: Vec<&String> = set
        .iter()
        .filter(|c| c.starts_with(&format!("{COOKIE}=")))
        .collect();
    assert_eq!(session.len(), 1, "{set:?}");
    let (pair, attrs) = session[0].split_once(';').expect("attributes");
    let value = pair.strip_prefix(&format!("{COOKIE}=")).expect("name");
    assert_eq!(value.len(), 43, "a 256-bit base64url ticket");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let mut attrs: Vec<String> = attrs.split(';').map(|a| a.trim().to_owned()).collect();
    attrs.sort();
    let max_age = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse::<u64>()
        .expect("numeric Max-Age");
    assert!(max_age > 0);
    assert_eq!(
        attrs,
        vec![
            "HttpOnly".to_owned(),
            format!("Max-Age={max_age}"),
            "Path=/".to_owned(),
            "SameSite=Strict".to_owned(),
            "Secure".to_owned(),
        ],
        "exactly these attributes: no Domain, no Expires, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_duplicated_and_damaged_cookies_get_no_session() {
    let (redis, stack) = redis_stack().await;
    let alice = Browser::new();
    let t = stack.login(&alice).await;
    let keys_before = key_count(&redis).await;
    let flip = |i: usize| {
        let mut b = t.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).expect("ascii")
    };
    // The last character carries 2 padding bits: a non-canonical encoding of the same bytes.
    let last = t.as_bytes()[42];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.iter().position(|c| *c == last).expect("base64url");
    let non_canonical = format!("{}{}", &t[..42], alphabet[idx ^ 1] as char);
    let std_b64 = format!("{}+{}/", &t[..20], &t[21..42]);
    let planted = "A".repeat(43);
    // (name, Cookie header value)
    let cases: Vec<(&str, String)> = vec![
        ("lower-case __host- prefix", format!("__host-SessionID={t}")),
        ("__Secure- prefix", format!("__Secure-SessionID={t}")),
        ("no prefix", format!("SessionID={t}")),
        ("lower-case name", format!("__Host-sessionid={t}")),
        (
            "valid then invalid",
            format!("{COOKIE}={t}; {COOKIE}={planted}"),
        ),
        (
            "invalid then valid",
            format!("{COOKIE}={planted}; {COOKIE}={t}"),
        ),
        ("valid twice", format!("{COOKIE}={t}; {COOKIE}={t}")),
        ("valid then empty", format!("{COOKIE}={t}; {COOKIE}=")),
        ("empty then valid", format!("{COOKIE}=; {COOKIE}={t}")),
        ("bit flip at the start", format!("{COOKIE}={}", flip(0))),
        ("bit flip in the middle", format!("{COOKIE}={}", flip(21))),
        ("bit flip at the end", format!("{COOKIE}={}", flip(41))),
        (
            "non-canonical last character",
            format!("{COOKIE}={non_canonical}"),
        ),
        ("truncated by one", format!("{COOKIE}={}", &t[..42])),
        ("truncated to half", format!("{COOKIE}={}", &t[..21])),
        ("one character appended", format!("{COOKIE}={t}A")),
        (
            "4 KiB appended",
            format!("{COOKIE}={t}{}", "A".repeat(4096)),
        ),
        ("base64 padding appended", format!("{COOKIE}={t}=")),
        ("standard-alphabet + and /", format!("{COOKIE}={std_b64}")),
        ("double-quoted", format!("{COOKIE}=\"{t}\"")),
        (
            "first character percent-encoded",
            format!("{COOKIE}=%{:02X}{}", t.as_bytes()[0], &t[1..]),
        ),
        (
            "non-base64 characters",
            format!("{COOKIE}={}", "!".repeat(43)),
        ),
        ("non-ASCII", format!("{COOKIE}={}é", &t[..41])),
        (
            "whitespace inside",
            format!("{COOKIE}={} {}", &t[..20], &t[21..]),
        ),
        ("planted well-formed id", format!("{COOKIE}={planted}")),
        ("empty value", format!("{COOKIE}=")),
        (
            "ticket with another namespace's shape",
            format!("{COOKIE}={}", "_".repeat(43)),
        ),
    ];
    for (name, cookie) in &cases {
        let r = Browser::new()
            .get_with(&stack.url("/bff/session"), &[("cookie", cookie)])
            .await
            .expect(name);
        assert_eq!(r.status.as_u16(), 401, "{name}: {}", r.text());
        let api = Browser::new()
            .get_with(&stack.url("/api/orders/1"), &[("cookie", cookie)])
            .await
            .expect(name);
        assert_eq!(api.status.as_u16(), 401, "{name} on the API");
    }
    // Two separate Cookie headers, valid + invalid in both orders (raw: clients would merge).
    let host = stack.base.trim_start_matches("http://").to_owned();
    for (name, first, second) in [
        (
            "two Cookie headers, valid first",
            t.clone(),
            planted.clone(),
        ),
        (
            "two Cookie headers, invalid first",
            planted.clone(),
            t.clone(),
        ),
    ] {
        let raw = exchange(
            port_of(&stack.base),
            format!(
                "GET /bff/session HTTP/1.1\r\nHost: {host}\r\nCookie: {COOKIE}={first}\r\nCookie: {COOKIE}={second}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(statuses(&raw), vec![401], "{name}");
    }
    assert_eq!(stack.upstream.count(), 0, "no payload reached the upstream");
    assert_eq!(
        key_count(&redis).await,
        keys_before,
        "rejected cookies created or removed no store state"
    );
    // The real cookie still works: no payload destroyed the session.
    let ok = Browser::new()
        .get_with(
            &stack.url("/bff/session"),
            &[("cookie", &format!("{COOKIE}={t}"))],
        )
        .await
        .expect("ok");
    assert_eq!(ok.status.as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_session_id_never_becomes_a_session() {
    let (redis, stack) = redis_stack().await;
    // (name, what the attacker plants in the victim's browser)
    let attacker = Browser::new();
    let attackers_own = stack.login(&attacker).await;
    let cases: Vec<(&str, String)> = vec![
        ("random well-formed id", "Q".repeat(43)),
        ("the attacker's own live session", attackers_own.clone()),
        ("garbage", "fixated".into()),
    ];
    for (name, planted) in cases {
        let victim = Browser::new();
        victim
            .set_cookie(
                &stack.url("/"),
                &format!("{COOKIE}={planted}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            )
            .expect("plant");
        let got = stack.login(&victim).await;
        assert_ne!(got, planted, "{name}: the planted id became the session");
        let with_planted = Browser::new()
            .get_with(
                &stack.url("/bff/session"),
                &[("cookie", &format!("{COOKIE}={planted}"))],
            )
            .await
            .expect(name);
        assert_eq!(
            with_planted.status.as_u16(),
            401,
            "{name}: the planted id opens a session after the victim's login"
        );
        let ok = victim.get(&stack.url("/bff/session")).await.expect(name);
        assert_eq!(ok.status.as_u16(), 200, "{name}");
        // No store key is named by (or contains) the planted value.
        for k in keys(&redis).await {
            assert!(
                !k.contains(&planted),
                "{name}: store key {k} names the planted id"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_floods_stay_bounded_and_create_no_state() {
    let (redis, stack) = redis_stack().await;
    let before = keys(&redis).await;
    let host = stack.base.trim_start_matches("http://").to_owned();
    let many = (0..500)
        .map(|i| format!("c{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let many_sessions = (0..300)
        .map(|i| format!("{COOKIE}={:0>43}", i))
        .collect::<Vec<_>>()
        .join("; ");
    let headers_600 = (0..600)
        .map(|i| format!("Cookie: k{i}=v\r\n"))
        .collect::<String>();
    // (name, header lines, accepted statuses)
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("500 small cookies", format!("Cookie: {many}\r\n"), &[401]),
        (
            "300 session cookies",
            format!("Cookie: {many_sessions}\r\n"),
            &[401],
        ),
        ("600 Cookie headers", headers_600, &[431, 400]),
        (
            "one 100 KiB cookie",
            format!("Cookie: big={}\r\n", "x".repeat(100 * 1024)),
            &[431, 400],
        ),
        (
            "100 KiB of cookie pairs",
            format!("Cookie: {}\r\n", "a=b; ".repeat(20_000)),
            &[431, 400],
        ),
        (
            "1 MiB session cookie",
            format!("Cookie: {COOKIE}={}\r\n", "A".repeat(1 << 20)),
            &[431, 400],
        ),
    ];
    for (name, lines, accepted) in cases {
        for path in ["/bff/session", "/api/orders/1", "/bff/login?returnTo=/x"] {
            let raw = exchange(
                port_of(&stack.base),
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{lines}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            let got = statuses(&raw);
            let login_ok = path.starts_with("/bff/login") && got == vec![302];
            assert!(
                login_ok || (got.len() == 1 && accepted.contains(&got[0])),
                "{name} on {path}: {got:?}"
            );
            if !login_ok && got.first() == Some(&302) {
                panic!("{name} on {path}: a flood started a login");
            }
        }
    }
    // Only the two GET /bff/login rows that were served created state: one short-lived login
    // state each. No session, nothing per cookie.
    let after = keys(&redis).await;
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert!(
        !new.iter().any(|k| k.contains("{s:")),
        "a flood created a session: {new:?}"
    );
    assert_eq!(
        new.iter().filter(|k| k.contains("{l:")).count(),
        2,
        "one login state per served login: {new:?}"
    );
    assert_eq!(stack.upstream.count(), 0);
    // Normal traffic is still served.
    let alice = Browser::new();
    stack.login(&alice).await;
    let ok = alice
        .request(Method::GET, &stack.url("/api/orders/1"), &[], "")
        .await
        .expect("api");
    assert_eq!(ok.status.as_u16(), 200);
    common::leak::assert_logs_clean(&stack.idp).await;
}

/// Sends one raw request carrying `cookie` (exact bytes) and answers (status, the session
/// cookie's value if set, the body).
async fn raw_with_cookie(
    stack: &Stack,
    method: &str,
    target: &str,
    cookie: &[u8],
    extra: &str,
) -> (u16, Option<String>, String) {
    let host = stack.base.trim_start_matches("http://");
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Cookie: ").into_bytes();
    req.extend_from_slice(cookie);
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let raw = exchange(port_of(&stack.base), &req).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let prefix = format!("set-cookie: {COOKIE}=");
    let ticket = head.lines().find_map(|l| {
        l.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&prefix))
            .map(|_| l[prefix.len()..].split(';').next().unwrap_or("").to_owned())
    });
    let status = statuses(&raw).first().copied().unwrap_or(0);
    (status, ticket, body.to_owned())
}

/// Browsers put other cookies' values on the wire as raw bytes (`document.cookie = "n=Müller"`
/// is sent as UTF-8, and a sibling subdomain may set such a cookie for the parent domain): one
/// such cookie in the same `Cookie` header must hide neither the login binding nor the session.
/// Our own cookies' values are ASCII, so a non-ASCII value of our name still counts (and a
/// duplicate stays ambiguous).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cookies_with_non_ascii_bytes_hide_neither_the_login_nor_the_session() {
    let stack = Stack::start().await;
    let alice = Browser::new();
    let callback = alice
        .login_until_callback(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login at the provider");
    let callback = url::Url::parse(&callback).expect("callback URL");
    let target = format!("{}?{}", callback.path(), callback.query().unwrap_or(""));
    let binding = alice
        .cookie("__Host-Portcullis-Login")
        .expect("login binding cookie");
    let foreign: &[u8] = b"pref=M\xc3\xbcller; legacy=caf\xe9";
    let cookie = [foreign, b"; __Host-Portcullis-Login=", binding.as_bytes()].concat();
    let (status, ticket, body) = raw_with_cookie(&stack, "GET", &target, &cookie, "").await;
    assert_eq!(status, 302, "callback: {body}");
    let ticket = ticket.expect("the callback set the session cookie");

    let cookie = [foreign, b"; ", COOKIE.as_bytes(), b"=", ticket.as_bytes()].concat();
    let (status, _, body) = raw_with_cookie(&stack, "GET", "/bff/session", &cookie, "").await;
    assert_eq!(status, 200, "session: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("session JSON");
    let csrf = json["csrfToken"].as_str().expect("csrfToken").to_owned();
    let extra = format!("X-CSRF-Token: {csrf}\r\nContent-Length: 0\r\n");
    let (status, _, body) = raw_with_cookie(&stack, "POST", "/api/orders/1", &cookie, &extra).await;
    assert_eq!(status, 200, "API call: {body}");
    assert_eq!(stack.upstream.count(), 1);
    assert!(!stack.upstream.last().expect("request").has_header("cookie"));

    // A non-ASCII value under our own name is never a session, and makes a duplicate ambiguous.
    for own in [
        [COOKIE.as_bytes(), b"=\xff", &ticket.as_bytes()[1..]].concat(),
        [
            COOKIE.as_bytes(),
            b"=\xff; ",
            COOKIE.as_bytes(),
            b"=",
            ticket.as_bytes(),
        ]
        .concat(),
    ] {
        let (status, _, _) = raw_with_cookie(&stack, "GET", "/bff/session", &own, "").await;
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&own));
    }
}
