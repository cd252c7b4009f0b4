//! Fault injection against the real stack: a fault proxy (`testkit::faults`) between the gateway
//! and Redis or an upstream, and the real OpenID Provider hung (SIGSTOP) or restarted.
//!
//! The provider is faulted at the process, not through the proxy: its issuer URL is its own
//! listen address, and the gateway checks discovery's `issuer` against its configuration, so a
//! proxy on another port would be a different provider. A stopped process is a real hang (the
//! kernel still accepts connections, nothing answers); a restart is a real outage with new
//! signing keys (the fixture generates them at start), which is also a JWKS rotation.
//!
//! No timing assertions: every case asserts an outcome (status, cookie, store, upstream
//! count), and waits are bounded by generous timeouts that fail the test.

mod common;

use std::time::Duration;

use common::{COOKIE, Options, Stack};
use http::Method;
use testkit::{
    browser::{Browser, Response},
    faults::{Fault, FaultProxy},
    idp::Idp,
    redis::{RedisOptions, RedisServer},
    upstream::RecordingUpstream,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A bound on any single wait; hitting it fails the test.
const BOUND: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {BOUND:?}"))
}

async fn get(b: &Browser, url: &str) -> Response {
    within(url, b.get(url)).await.expect(url)
}

/// The response neither ends the session nor tells the browser to forget its cookie.
fn keeps_cookie(r: &Response, what: &str) {
    assert_ne!(r.status.as_u16(), 401, "{what}: a fault is not a logout");
    assert!(
        !r.set_cookies().iter().any(|c| c.starts_with(COOKIE)),
        "{what}: the session cookie is left alone: {:?}",
        r.set_cookies()
    );
}

fn problem(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_fail_closed_and_heal_without_restart() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let proxy =
        FaultProxy::start(format!("127.0.0.1:{}", redis.port()).parse().expect("addr")).await;
    let stack = Stack::start_with(Options {
        session_extra: format!(
            "store = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\nredis_timeout = \"1s\"",
            proxy.port()
        ),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    assert_eq!(
        get(&b, &stack.url("/api/orders/1")).await.status.as_u16(),
        200
    );

    for fault in [
        Fault::Delay(Duration::from_secs(3)),
        Fault::Stall,
        Fault::Reset,
        Fault::Refuse,
    ] {
        proxy.set(fault);
        proxy.cut();
        let before = stack.upstream.count();
        for path in ["/bff/session", "/api/orders/1"] {
            let what = format!("{path} with the store {fault:?}");
            let r = get(&b, &stack.url(path)).await;
            problem(&r, 503, &what);
            keeps_cookie(&r, &what);
        }
        let r = get(&b, &stack.url("/bff/login")).await;
        problem(&r, 503, &format!("login with the store {fault:?}"));
        assert_eq!(
            get(&b, &stack.url("/readyz")).await.status.as_u16(),
            503,
            "not ready with the store {fault:?}"
        );
        assert_eq!(
            stack.upstream.count(),
            before,
            "never fail open ({fault:?})"
        );

        proxy.set(Fault::Pass);
        proxy.cut();
        let healed = common::eventually(|| {
            let (b, url) = (b.clone(), stack.url("/api/orders/1"));
            async move { b.get(&url).await.is_ok_and(|r| r.status.as_u16() == 200) }
        })
        .await;
        assert!(
            healed,
            "the same session works again after {fault:?}, no restart"
        );
    }
    assert!(
        stack.session_record(&ticket).await.is_some(),
        "session kept"
    );
}

/// An upstream behind the proxy as route `/faulty` (2 s timeout, 1 s connect timeout).
async fn stack_with_faulty_upstream(upstream: &RecordingUpstream, proxy: &FaultProxy) -> Stack {
    let _ = upstream;
    Stack::start_with(Options {
        extra_toml: format!(
            "\n[[routes]]\nprefix = \"/faulty\"\nupstream = \"http://127.0.0.1:{}/svc\"\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n",
            proxy.port()
        ),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hang_is_504_and_resets_are_502() {
    let upstream = RecordingUpstream::start().await;
    let proxy = FaultProxy::start(upstream.addr()).await;
    let stack = stack_with_faulty_upstream(&upstream, &proxy).await;
    let b = Browser::new();
    stack.login(&b).await;
    assert_eq!(get(&b, &stack.url("/faulty/a")).await.status.as_u16(), 200);
    assert_eq!(upstream.count(), 1);

    proxy.set(Fault::Stall);
    proxy.cut();
    let r = get(&b, &stack.url("/faulty/hang")).await;
    problem(&r, 504, "upstream stalled past the route timeout");
    keeps_cookie(&r, "stalled upstream");
    assert_eq!(upstream.count(), 1, "the stalled request never reached it");

    for fault in [Fault::Reset, Fault::Refuse] {
        proxy.set(fault);
        proxy.cut();
        let r = get(&b, &stack.url("/faulty/x")).await;
        problem(&r, 502, &format!("upstream {fault:?}"));
        keeps_cookie(&r, &format!("upstream {fault:?}"));
    }

    proxy.set(Fault::Pass);
    proxy.cut();
    let r = get(&b, &stack.url("/faulty/back")).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(upstream.last().expect("recorded").path(), "/svc/back");
}

/// Opens a connection that starts a request and never finishes its headers, sending one more
/// header byte every 500 ms. Returns true once the server closed it (EOF or reset, after a
/// possible 408), false if it was still open after `BOUND`.
async fn slowloris(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let _ = s
        .write_all(b"GET /bff/session HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await;
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut buf = [0u8; 512];
    while tokio::time::Instant::now() < deadline {
        if s.write_all(b"a").await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 (or any answer) and then the close.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    false
}

/// Opens a connection, sends `first` (nothing, or the start of an HTTP/2 preface) and then
/// nothing more. Returns true once the server closed it, false if it was still open after `BOUND`.
async fn silent(port: u16, first: &'static [u8]) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(first).await.is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
        {
            return true;
        }
    }
    false
}

/// What the silent clients send before going quiet: nothing; part of an HTTP/2 preface (the
/// server waits for the rest to choose the protocol); the preface and an empty SETTINGS frame
/// (an HTTP/2 connection that never sends a request: hyper's HTTP/2 server has no timer of its
/// own, see `server::idle`); the same and then a header block left open (HEADERS without
/// END_HEADERS, stream 1, a one-byte fragment).
const SILENT: [&[u8]; 4] = [
    b"",
    b"PRI * HTTP/2.0\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_while_normal_traffic_is_served() {
    let stack = Stack::start_with(Options {
        server_extra: "header_read_timeout = \"3s\"".into(),
        ..Options::default()
    })
    .await;
    let port = stack.instances[0].port();
    let b = Browser::new();
    stack.login(&b).await;

    const CLIENTS: usize = 300;
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        match i % 4 {
            0..=2 => slow.spawn(async move { ("dribbling headers", slowloris(port).await) }),
            _ => {
                let first = SILENT[i / 4 % SILENT.len()];
                slow.spawn(async move {
                    (
                        std::str::from_utf8(first).unwrap_or("?"),
                        silent(port, first).await,
                    )
                })
            }
        };
    }
    // Served while every slow client is connected and dribbling.
    for i in 0..20 {
        let r = get(&b, &stack.url(&format!("/api/orders/{i}"))).await;
        assert_eq!(r.status.as_u16(), 200, "normal traffic during the attack");
    }
    let mut open = Vec::new();
    while let Some(done) = slow.join_next().await {
        let (kind, closed) = done.expect("join");
        if !closed {
            open.push(kind);
        }
    }
    assert!(
        open.is_empty(),
        "every slow connection was closed by the server; still open: {open:?}"
    );
    assert_eq!(
        get(&b, &stack.url("/bff/session")).await.status.as_u16(),
        200
    );
}

/// The admin listener checks its bearer token only once the headers are complete, so anyone who
/// can reach it could otherwise hold connections open for ever: it has the same header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_on_the_admin_listener_too() {
    let token = portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng");
    let token_file = common::running::write_secret("admin-token", &token);
    let stack = Stack::start_with(Options {
        server_extra: "header_read_timeout = \"2s\"".into(),
        extra_toml: format!("\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"{token_file}\"\n"),
        ..Options::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    portcullis::server::serve_admin(listener, stack.state().clone(), stopped);
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..10 {
        slow.spawn(slowloris(port));
    }
    for first in SILENT {
        slow.spawn(silent(port, first));
    }
    let bearer = format!("Bearer {token}");
    let metrics = within(
        "metrics",
        Browser::new().get_with(
            &format!("http://127.0.0.1:{port}/metrics"),
            &[("authorization", bearer.as_str())],
        ),
    )
    .await
    .expect("metrics");
    assert_eq!(metrics.status.as_u16(), 200, "served during the attack");
    while let Some(closed) = slow.join_next().await {
        assert!(
            closed.expect("join"),
            "a slow-header admin connection stayed open"
        );
    }
}

/// SIGSTOP/SIGCONT of the provider's process: a hang, then recovery with its state intact.
/// Resumes on drop, so a failing test never leaves a stopped process behind.
struct Hung(u32);

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

impl Hung {
    fn provider(idp: &Idp) -> Hung {
        let pid = idp.pid().expect("provider pid");
        signal(pid, "-STOP");
        Hung(pid)
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_hang_during_refresh_and_logout_keeps_the_session_until_logout() {
    // 20 s access tokens refreshed 15 s early: stale 5 s after login.
    let stack = Stack::start_with(Options {
        access_token_ttl: 20,
        refresh_skew: "15s",
        extra_oidc: "http_timeout = \"2s\"".into(),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let csrf = stack.csrf(&b).await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;

    let hung = Hung::provider(&stack.idp);
    let before = stack.upstream.count();
    let r = get(&b, &stack.url("/api/orders/1")).await;
    problem(&r, 503, "refresh with the provider hung");
    keeps_cookie(&r, "refresh with the provider hung");
    assert_eq!(
        stack.upstream.count(),
        before,
        "no stale token sent upstream"
    );
    assert!(
        stack.session_record(&ticket).await.is_some(),
        "session kept"
    );
    drop(hung);

    // The gateway gave up on that refresh, but the provider may still read the abandoned request
    // once it runs again and rotate the refresh token into a response nobody reads. Whether it
    // does is a race outside the gateway's control (docs/threat-model.md, "Lost refresh
    // responses"); both outcomes are checked strictly.
    let r = get(&b, &stack.url("/api/orders/1")).await;
    let stats = stack.idp.stats().await.expect("stats");
    let (ticket, csrf) = if stats.refresh_invalid_grant == 0 {
        assert_eq!(
            r.status.as_u16(),
            200,
            "refreshed once the provider is back: {}",
            r.text()
        );
        (ticket, csrf)
    } else {
        // The provider answered the abandoned refresh and then refused the old token as reused:
        // the session ends (fail closed) and nothing went upstream.
        assert_eq!(stats.refresh_invalid_grant, 1, "{stats:?}");
        assert!(
            stats.refresh_grants() >= 2,
            "abandoned + refused: {stats:?}"
        );
        problem(&r, 401, "refresh token rotated into a lost response");
        assert_eq!(stack.upstream.count(), before, "nothing sent upstream");
        assert!(
            stack.session_record(&ticket).await.is_none(),
            "the refused session is deleted"
        );
        let ticket = stack.login(&b).await;
        let csrf = stack.csrf(&b).await;
        (ticket, csrf)
    };

    // Logout while the provider hangs: revocation times out, the session still ends here.
    let hung = Hung::provider(&stack.idp);
    let r = within(
        "logout",
        b.request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf), ("origin", &stack.base)],
            "",
        ),
    )
    .await
    .expect("logout");
    drop(hung);
    assert_eq!(r.status.as_u16(), 200, "logout: {}", r.text());
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0")),
        "the cookie is expired: {:?}",
        r.set_cookies()
    );
    assert!(
        stack.session_record(&ticket).await.is_none(),
        "session deleted locally"
    );
}

/// A refresh loads the session, then waits for the provider. A revocation that lands in that
/// wait must win: the refreshed tokens are dropped and the session stays ended (a plain write of
/// the refreshed record brought it back, and outside the subject index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_during_its_refresh_stays_revoked() {
    let stack = Stack::start_with(Options {
        access_token_ttl: 20,
        refresh_skew: "15s",
        extra_oidc: "http_timeout = \"20s\"".into(),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let session = stack.session_record(&ticket).await.expect("live");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let grants_before = stack.idp.stats().await.expect("stats").refresh_grants();

    let hung = Hung::provider(&stack.idp);
    let in_flight = {
        let (b, url) = (b.clone(), stack.url("/api/orders/1"));
        tokio::spawn(async move { b.get(&url).await })
    };
    // The refresh holds the session's lock while it waits for the provider.
    let store = stack.state().sessions.store().clone();
    let refreshing = common::eventually(|| {
        let (store, key) = (store.clone(), session.key.clone());
        async move {
            match store
                .try_lock(&key, Duration::from_secs(1))
                .await
                .expect("store")
            {
                None => true,
                Some(ours) => {
                    store.unlock(&key, &ours).await.expect("unlock");
                    false
                }
            }
        }
    })
    .await;
    assert!(refreshing, "the request is waiting in its refresh");

    let ended = stack
        .state()
        .sessions
        .end_subject(&session.record.iss, &session.record.sub)
        .await
        .expect("revoke");
    assert_eq!(ended, 1);
    assert!(stack.session_record(&ticket).await.is_none(), "revoked");
    drop(hung);

    let r = within("the request caught in the refresh", in_flight)
        .await
        .expect("join")
        .expect("response");
    problem(&r, 401, "the session ended during its refresh");
    let stats = stack.idp.stats().await.expect("stats");
    assert!(
        stats.refresh_grants() > grants_before,
        "the provider answered the refresh: {stats:?}"
    );
    assert!(
        stack.session_record(&ticket).await.is_none(),
        "the refreshed record was not written back"
    );
    problem(
        &get(&b, &stack.url("/bff/session")).await,
        401,
        "still revoked",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_during_login_then_restart_with_new_signing_keys() {
    let mut stack = Stack::start_with(Options {
        extra_oidc: "http_timeout = \"2s\"".into(),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let first = stack.login(&b).await;
    let old_jwks = stack.idp.discovery().await.expect("discovery")["jwks_uri"].clone();
    let old_keys = reqwest::get(old_jwks.as_str().expect("jwks uri"))
        .await
        .expect("jwks")
        .text()
        .await
        .expect("jwks body");

    // The user signs in at the provider; the provider dies before the code is redeemed.
    let fresh = Browser::new();
    let callback = fresh
        .login_until_callback(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login at the provider");
    let mut options = stack.idp.options().clone();
    options.port = Some(stack.idp.port());
    signal(stack.idp.pid().expect("pid"), "-TERM");
    let down = common::eventually(|| async {
        TcpStream::connect(("127.0.0.1", options.port.expect("port")))
            .await
            .is_err()
    })
    .await;
    assert!(down, "the provider is down");
    let r = get(&fresh, &callback).await;
    assert!(
        matches!(r.status.as_u16(), 502 | 503),
        "token endpoint unreachable: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(fresh.cookie(COOKIE).is_none(), "no session without tokens");
    assert!(!r.text().contains("code="), "no code echoed");

    // Same issuer, new process, new signing keys: the gateway refetches the JWKS by itself.
    let restarted = Idp::start(options).await.expect("restart the provider");
    let new_keys = reqwest::get(old_jwks.as_str().expect("jwks uri"))
        .await
        .expect("jwks")
        .text()
        .await
        .expect("jwks body");
    assert_ne!(
        new_keys, old_keys,
        "the restarted provider signs with new keys"
    );
    drop(std::mem::replace(&mut stack.idp, restarted));
    let again = Browser::new();
    let ticket = stack.login(&again).await;
    assert_eq!(
        get(&again, &stack.url("/api/orders/1"))
            .await
            .status
            .as_u16(),
        200
    );
    assert_ne!(ticket, first);
}
