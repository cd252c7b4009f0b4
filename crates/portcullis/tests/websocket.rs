//! WebSocket proxying through the real login: the upgrade needs the session cookie and our own
//! `Origin`, the upstream handshake carries the bearer token (never the cookie), messages flow
//! both ways, and every way of ending the session closes the socket (logout, operator
//! revocation, back-channel logout, a logout on another instance sharing Redis, shutdown).
//! Every wait is bounded by [`LIMIT`]: a socket that is not closed fails the test.

mod common;

use std::time::Duration;

use common::{COOKIE, Options, Stack};
use futures_util::{SinkExt, StreamExt};
use http::Method;
use testkit::{
    browser::Browser,
    cookies::PortScope,
    redis::{RedisOptions, RedisServer},
    streaming::{WsEnd, WsUpstream},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

const LIMIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_route(ws: &WsUpstream) -> String {
    format!(
        "\n[[routes]]\nprefix = \"/ws\"\nupstream = \"{}\"\ntimeout = \"2s\"\nwebsocket = true\n",
        ws.url()
    )
}

/// Opens `path` on instance `i` as a browser would (cookie, Origin, offered subprotocols and
/// `permessage-deflate`).
async fn open(
    stack: &Stack,
    i: usize,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let url = stack.url_on(i, path).replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    if let Some(c) = cookie {
        h.insert(
            "cookie",
            format!("{COOKIE}={c}; other=1").parse().expect("hv"),
        );
    }
    // Several Origins when given as `a\nb` (no browser sends two).
    for o in origin.into_iter().flat_map(|o| o.split('\n')) {
        h.append("origin", o.parse().expect("hv"));
    }
    h.insert(
        "sec-websocket-protocol",
        "chat.v2, chat.v1".parse().expect("hv"),
    );
    h.insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .expect("hv"),
    );
    let (ws, resp) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat.v2"[..]),
        "the upstream's subprotocol choice reaches the browser"
    );
    assert!(
        !resp.headers().contains_key("sec-websocket-extensions"),
        "permessage-deflate is not negotiated"
    );
    Ok(ws)
}

fn refused_status(r: Result<Ws, tungstenite::Error>) -> u16 {
    match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let reply = tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("reply in time")
        .expect("open")
        .expect("frame");
    assert_eq!(reply, Message::text(format!("echo:{text}")));
}

/// Reads until the gateway's close frame; returns its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the gateway closed the socket in time")
}

async fn upstream_end(up: &WsUpstream, i: usize) -> WsEnd {
    tokio::time::timeout(LIMIT, up.wait_end(i))
        .await
        .expect("the upstream connection ended in time")
}

async fn stack_with(up: &WsUpstream, mut opts: Options) -> Stack {
    opts.extra_toml.push_str(&ws_route(up));
    Stack::start_with(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_need_a_session_our_origin_and_a_websocket_route() {
    let up = WsUpstream::start().await.expect("ws upstream");
    // A public route never upgrades (and `websocket = true` with `public = true` is a config
    // error): a socket needs a session.
    let public = format!(
        "\n[[routes]]\nprefix = \"/open\"\nupstream = \"{}\"\npublic = true\n",
        up.url()
    );
    let stack = stack_with(
        &up,
        Options {
            extra_toml: public,
            ..Options::default()
        },
    )
    .await;
    let origin = stack.base.clone();
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;

    // No cookie (or a forged one): 401, and the upstream never sees a handshake.
    assert_eq!(
        refused_status(open(&stack, 0, "/ws/chat", None, Some(&origin)).await),
        401
    );
    assert_eq!(
        refused_status(open(&stack, 0, "/ws/chat", Some("forged"), Some(&origin)).await),
        401
    );
    // A valid session but a foreign, a look-alike or no Origin: 403.
    let ours_then_evil = format!("{origin}\nhttps://evil.example");
    for bad in [
        Some("https://evil.example"),
        Some("http://localhost:1"),
        Some("null"),
        Some(ours_then_evil.as_str()),
        None,
    ] {
        assert_eq!(
            refused_status(open(&stack, 0, "/ws/chat", Some(&ticket), bad).await),
            403,
            "Origin {bad:?}"
        );
    }
    assert_eq!(
        refused_status(open(&stack, 0, "/open/chat", Some(&ticket), Some(&origin)).await),
        400
    );
    assert!(up.handshakes().is_empty(), "no refused upgrade reached it");
    // A route without `websocket = true`: refused, and nothing reaches its upstream.
    let before = stack.upstream.count();
    assert_eq!(
        refused_status(open(&stack, 0, "/api/orders/1", Some(&ticket), Some(&origin)).await),
        400
    );
    assert_eq!(stack.upstream.count(), before);
    // Any other protocol switch (h2c smuggling) is refused before routing.
    assert_eq!(
        common::raw_status(
            &stack.base,
            "/api/orders/1",
            "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        )
        .await,
        400
    );
    assert_eq!(stack.upstream.count(), before);

    // The real thing: bearer token upstream, no browser cookie, no extension, messages both ways.
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&origin))
        .await
        .expect("upgrade");
    echo(&mut ws, "hello").await;
    echo(&mut ws, "second").await;
    let hs = &up.handshakes()[0];
    let get = |name: &str| hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let token = stack
        .session_record(&ticket)
        .await
        .expect("session")
        .record
        .access_token
        .clone();
    assert_eq!(
        get("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(get("cookie"), None, "the browser's cookie never crosses");
    assert_eq!(get("sec-websocket-extensions"), None);
    assert_eq!(get("sec-websocket-protocol"), Some("chat.v2, chat.v1"));
    assert_eq!(get("origin"), Some(origin.as_str()));
    assert!(!common::running::captured_logs().contains(&token));
    // The log capture covers the whole test process: the test's own WebSocket client traces
    // the cookie it sends (target `tungstenite::handshake::client`); nothing else may.
    let logs = common::running::captured_logs();
    let leaks: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(ticket.as_str()))
        .filter(|l| !l.contains(r#""log.target":"tungstenite::handshake::client""#))
        .collect();
    assert!(leaks.is_empty(), "the session cookie was logged: {leaks:?}");

    // The browser closes: the upstream sees the browser's close code.
    ws.close(None).await.expect("close");
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1005));

    // Shutdown closes every socket with "going away".
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&origin))
        .await
        .expect("upgrade");
    echo(&mut ws, "before shutdown").await;
    assert_eq!(stack.state().streams.count(), 1);
    assert_eq!(stack.state().streams.close_all(), 1);
    assert_eq!(close_code(&mut ws).await, Some(1001));
    assert_eq!(upstream_end(&up, 1).await, WsEnd::Closed(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_socket() {
    let up = WsUpstream::start().await.expect("ws upstream");
    let stack = stack_with(&up, Options::default()).await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let other = Browser::new();
    let other_ticket = stack.login(&other).await;
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&stack.base))
        .await
        .expect("upgrade");
    let mut other_ws = open(
        &stack,
        0,
        "/ws/chat",
        Some(&other_ticket),
        Some(&stack.base),
    )
    .await
    .expect("upgrade");
    echo(&mut ws, "hi").await;
    let csrf = stack.csrf(&browser).await;
    let out = browser
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout");
    assert_eq!(out.status.as_u16(), 200);
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1001));
    // Another session's socket is untouched.
    echo(&mut other_ws, "still here").await;
    assert_eq!(up.ends()[1], WsEnd::Open);
}

async fn start_admin(stack: &Stack) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    portcullis::server::serve_admin(listener, stack.state().clone(), rx);
    (base, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_revocation_closes_the_socket() {
    let token = portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng");
    let path = common::running::write_secret("admin-token", &token);
    let up = WsUpstream::start().await.expect("ws upstream");
    let stack = stack_with(
        &up,
        Options {
            extra_toml: format!("\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"{path}\"\n"),
            ..Options::default()
        },
    )
    .await;
    let (admin, _stop) = start_admin(&stack).await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&stack.base))
        .await
        .expect("upgrade");
    echo(&mut ws, "hi").await;
    let r = Browser::new()
        .request(
            Method::POST,
            &format!("{admin}/sessions/revoke"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            r#"{"subject":"alice"}"#,
        )
        .await
        .expect("revoke");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_channel_logout_closes_the_socket() {
    let up = WsUpstream::start().await.expect("ws upstream");
    let stack = stack_with(
        &up,
        Options {
            backchannel_logout: true,
            ..Options::default()
        },
    )
    .await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let sid = stack
        .session_record(&ticket)
        .await
        .expect("session")
        .record
        .sid
        .clone()
        .expect("sid in the ID token");
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&stack.base))
        .await
        .expect("upgrade");
    echo(&mut ws, "hi").await;
    stack
        .idp
        .backchannel_logout(None, Some(&sid))
        .await
        .expect("provider back-channel logout");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_another_instance_closes_the_socket_at_the_recheck() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let up = WsUpstream::start().await.expect("ws upstream");
    let stack = stack_with(
        &up,
        Options {
            instances: 2,
            session_extra: format!(
                "store = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"1s\"\nstream_recheck_interval = \"1s\"",
                redis.url()
            ),
            ..Options::default()
        },
    )
    .await;
    // Cookies ignore the port, as in a real browser: both instances see the session.
    let browser = Browser::with_port_scope(PortScope::IgnorePort);
    let ticket = stack.login(&browser).await;
    let mut ws = open(&stack, 0, "/ws/chat", Some(&ticket), Some(&stack.base))
        .await
        .expect("upgrade on A");
    echo(&mut ws, "hi").await;
    let s = browser
        .get(&stack.url_on(1, "/bff/session"))
        .await
        .expect("session on B");
    let csrf = s.json().expect("json")["csrfToken"]
        .as_str()
        .expect("csrf")
        .to_owned();
    let out = browser
        .request(
            Method::POST,
            &stack.url_on(1, "/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout on B");
    assert_eq!(out.status.as_u16(), 200);
    // A learns of it only through the shared store, at its next re-check.
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1001));
    assert!(
        common::eventually(|| async { stack.instances[0].state.streams.count() == 0 }).await,
        "the closed socket is unregistered"
    );
}

/// Real headless Chromium: the page opens the socket itself (the browser sets `Origin` and the
/// `SameSite=Strict` cookie), talks through it, and sees it closed with 1008 by its own logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_page_uses_the_socket_until_logout() {
    let wait = Duration::from_secs(15);
    let up = WsUpstream::start().await.expect("ws upstream");
    let page_root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/csp-page");
    let stack = stack_with(
        &up,
        Options {
            extra_toml: format!("\n[static_files]\nroot = \"{page_root}\"\n"),
            ..Options::default()
        },
    )
    .await;
    let mut b = testkit::chromium::ChromiumSession::launch()
        .await
        .unwrap_or_else(|e| panic!("headless Chromium: {e:#}"));
    b.goto(&stack.url("/bff/login?returnTo=/"))
        .await
        .expect("start the login");
    b.wait_for_selector("input[name=login]")
        .await
        .expect("the provider's login form");
    b.fill("input[name=login]", stack.idp.username())
        .await
        .expect("fill login");
    b.fill("input[name=password]", stack.idp.password())
        .await
        .expect("fill password");
    b.click("button[type=submit]").await.expect("submit");
    b.wait_for_function(
        &format!(
            "location.origin === {:?} && document.readyState === 'complete'",
            stack.base
        ),
        wait,
    )
    .await
    .expect("back on the app, signed in");

    let reply = b
        .evaluate(
            r#"new Promise((resolve, reject) => {
                const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws/chat', ['chat.v2']);
                window.wsClose = null;
                ws.onclose = (e) => { window.wsClose = e.code; };
                ws.onerror = () => reject(new Error('socket error'));
                ws.onopen = () => ws.send('from the page');
                ws.onmessage = (m) => resolve([ws.protocol, ws.extensions, m.data]);
            })"#,
        )
        .await
        .expect("a message round trip from the page");
    assert_eq!(
        reply,
        serde_json::json!(["chat.v2", "", "echo:from the page"])
    );
    let hs = &up.handshakes()[0];
    let get = |name: &str| hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("origin"), Some(stack.base.as_str()));
    assert!(get("authorization").is_some_and(|a| a.starts_with("Bearer ")));
    assert_eq!(get("cookie"), None);
    // Chromium offers permessage-deflate; it was not passed on.
    assert_eq!(get("sec-websocket-extensions"), None);

    let status = b
        .evaluate(
            r#"(async () => {
                const s = await (await fetch('/bff/session')).json();
                const r = await fetch('/bff/logout', { method: 'POST', headers: { 'X-CSRF-Token': s.csrfToken } });
                return r.status;
            })()"#,
        )
        .await
        .expect("logout from the page");
    assert_eq!(status, serde_json::json!(200));
    b.wait_for_function("window.wsClose === 1008", wait)
        .await
        .expect("the page's socket closed with 1008 by the logout");
    assert_eq!(upstream_end(&up, 0).await, WsEnd::Closed(1001));
}
