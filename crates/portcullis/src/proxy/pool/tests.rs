//! Against real HTTP servers on loopback: hyper's (HTTP/1.1, and HTTP/2 over rustls) and a
//! raw TCP one that closes idle connections without a word, as upstreams do.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{server::conn::http1 as server_h1, service::service_fn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;

use super::*;

#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    requests: Mutex<Vec<(String, Option<String>, http::Version)>>,
}

impl Seen {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// What each request asked for (request line or target), in order.
    fn targets(&self) -> Vec<String> {
        let requests = self.requests.lock().expect("lock");
        requests.iter().map(|r| r.0.clone()).collect()
    }
}

fn limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_idle: 16,
    }
}

fn pool(addr: SocketAddr, scheme: &str, tls: rustls::ClientConfig, limits: Limits) -> Arc<Pool> {
    let url = url::Url::parse(&format!("{scheme}://{addr}/base")).expect("url");
    Arc::new(Pool::new(&url, tls, limits).expect("pool"))
}

/// A pool that trusts the public web PKI only (as a route without `ca_file`).
fn web_pki_pool(addr: SocketAddr, scheme: &str, limits: Limits) -> Arc<Pool> {
    let tls = super::super::client::web_pki_tls().expect("tls");
    pool(addr, scheme, tls, limits)
}

fn get(addr: SocketAddr, scheme: &str, path: &str) -> Request<UpstreamBody> {
    let mut req = Request::new(Limited::new(axum::body::Body::empty(), 1024));
    *req.uri_mut() = format!("{scheme}://{addr}{path}").parse().expect("uri");
    req
}

async fn body_text(resp: Response<ResponseBody>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// A loopback server: binds a free port, counts accepted connections in `Seen`, and runs
/// `serve` for each connection in a task of its own.
async fn loopback<F, Fut>(serve: F) -> (SocketAddr, Arc<Seen>)
where
    F: Fn(tokio::net::TcpStream, Arc<Seen>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp, Arc::clone(&s)));
        }
    });
    (addr, seen)
}

/// hyper's HTTP/1.1 server with keep-alive. `/hold` answers with one chunk and then waits
/// for `release` before ending its body.
async fn h1_upstream(release: Arc<Notify>) -> (SocketAddr, Arc<Seen>) {
    loopback(move |tcp, s| {
        let release = Arc::clone(&release);
        async move {
            let on_close = Arc::clone(&s);
            let svc = service_fn(move |req: Request<Incoming>| {
                let (s, release) = (Arc::clone(&s), Arc::clone(&release));
                async move {
                    let host = req
                        .headers()
                        .get(header::HOST)
                        .map(|v| v.to_str().expect("host").to_owned());
                    let target = req.uri().to_string();
                    s.requests
                        .lock()
                        .expect("lock")
                        .push((target.clone(), host, req.version()));
                    let body = if target == "/hold" {
                        let frames = futures_util::stream::unfold(0, move |n| {
                            let release = Arc::clone(&release);
                            async move {
                                match n {
                                    0 => Some((
                                        Ok::<_, std::convert::Infallible>(Frame::data(
                                            Bytes::from("first"),
                                        )),
                                        1,
                                    )),
                                    1 => {
                                        release.notified().await;
                                        Some((Ok(Frame::data(Bytes::from("last"))), 2))
                                    }
                                    _ => None,
                                }
                            }
                        });
                        axum::body::Body::new(http_body_util::StreamBody::new(frames))
                    } else {
                        axum::body::Body::from(format!("hello {target}"))
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                }
            });
            let _ = server_h1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            on_close.closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn sequential_requests_share_one_connection_in_origin_form_with_host() {
    let (addr, seen) = h1_upstream(Arc::new(Notify::new())).await;
    let pool = web_pki_pool(addr, "http", limits());
    for i in 0..5 {
        let resp = pool
            .send(get(addr, "http", &format!("/x/{i}?q=1")))
            .await
            .expect("send");
        assert_eq!(body_text(resp).await, format!("hello /x/{i}?q=1"));
    }
    assert_eq!(seen.accepted(), 1, "one connection, reused");
    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 5);
    for (target, host, version) in requests {
        assert!(target.starts_with("/x/"), "origin form, got {target}");
        assert_eq!(host.as_deref(), Some(addr.to_string().as_str()));
        assert_eq!(version, http::Version::HTTP_11);
    }
}

#[tokio::test]
async fn a_connection_whose_body_was_abandoned_is_not_reused() {
    let release = Arc::new(Notify::new());
    let (addr, seen) = h1_upstream(Arc::clone(&release)).await;
    let pool = web_pki_pool(addr, "http", limits());
    let mut held = pool
        .send(get(addr, "http", "/hold"))
        .await
        .expect("send")
        .into_body();
    let first = held.frame().await.expect("frame").expect("ok");
    assert_eq!(first.into_data().expect("data"), "first");
    drop(held); // the browser went away mid-body
    // The first connection is still busy with its body: the next request needs its own.
    let resp = pool.send(get(addr, "http", "/next")).await.expect("send");
    assert_eq!(body_text(resp).await, "hello /next");
    assert_eq!(seen.accepted(), 2);
    release.notify_waiters();
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_at_most_max_idle_are_kept() {
    let (addr, seen) = h1_upstream(Arc::new(Notify::new())).await;
    let limits = Limits {
        max_idle: 2,
        ..limits()
    };
    let pool = web_pki_pool(addr, "http", limits);
    // Response heads first, bodies later: all four connections are busy at once.
    let mut heads = Vec::new();
    for i in 0..4 {
        heads.push(
            pool.send(get(addr, "http", &format!("/{i}")))
                .await
                .expect("send"),
        );
    }
    assert_eq!(seen.accepted(), 4);
    for h in heads {
        body_text(h).await;
    }
    eventually(
        "the pool parks two connections and closes the others",
        || pool.idle.lock().expect("lock").h1.len() == 2 && seen.closed.load(Ordering::SeqCst) == 2,
    )
    .await;
    for _ in 0..4 {
        body_text(pool.send(get(addr, "http", "/again")).await.expect("send")).await;
    }
    assert_eq!(seen.accepted(), 4, "the parked connections were reused");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, seen) = h1_upstream(Arc::new(Notify::new())).await;
    let limits = Limits {
        idle_timeout: Duration::from_millis(100),
        ..limits()
    };
    let pool = web_pki_pool(addr, "http", limits);
    body_text(pool.send(get(addr, "http", "/a")).await.expect("send")).await;
    eventually("the idle connection is closed", || {
        seen.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(pool.idle.lock().expect("lock").h1.is_empty());
    body_text(pool.send(get(addr, "http", "/b")).await.expect("send")).await;
    assert_eq!(seen.accepted(), 2);
}

/// Reads one request (head and `Content-Length` body) from `tcp`; its request line, or
/// `None` at EOF.
async fn read_request(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    buf.drain(..head_end + length);
    Some(head.lines().next().unwrap_or_default().to_owned())
}

/// A raw HTTP/1.1 upstream that answers the first request on each connection and then
/// closes it without `Connection: close`, as an upstream's idle timeout or restart does:
/// at once (`read_second = false`), or after reading a second request it leaves unanswered.
/// Records each request line.
async fn closing_upstream(read_second: bool) -> (SocketAddr, Arc<Seen>) {
    loopback(move |mut tcp, s| async move {
        let mut buf = Vec::new();
        for n in 0..1 + usize::from(read_second) {
            let Some(line) = read_request(&mut tcp, &mut buf).await else {
                return;
            };
            s.requests
                .lock()
                .expect("lock")
                .push((line, None, http::Version::HTTP_11));
            if n == 0 {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_replaced_not_failed() {
    let (addr, seen) = closing_upstream(false).await;
    let pool = web_pki_pool(addr, "http", limits());
    for i in 0..20 {
        let resp = pool
            .send(get(addr, "http", &format!("/{i}")))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(body_text(resp).await, "ok");
    }
    assert_eq!(seen.accepted(), 20);
}

#[tokio::test]
async fn an_idempotent_request_caught_by_an_upstream_close_is_sent_again_once() {
    let (addr, seen) = closing_upstream(true).await;
    let pool = web_pki_pool(addr, "http", limits());
    body_text(pool.send(get(addr, "http", "/first")).await.expect("send")).await;
    // Parked, reused, written, then closed unanswered: sent again on a new connection.
    let resp = pool
        .send(get(addr, "http", "/second"))
        .await
        .expect("retried");
    assert_eq!(body_text(resp).await, "ok");
    assert_eq!(seen.accepted(), 2);
    let lines = seen.targets();
    assert_eq!(
        lines,
        [
            "GET /first HTTP/1.1",
            "GET /second HTTP/1.1",
            "GET /second HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn a_request_with_a_body_caught_by_an_upstream_close_is_not_replayed() {
    let (addr, seen) = closing_upstream(true).await;
    let pool = web_pki_pool(addr, "http", limits());
    body_text(pool.send(get(addr, "http", "/first")).await.expect("send")).await;
    let mut post = Request::new(Limited::new(axum::body::Body::from("{\"op\":1}"), 1024));
    *post.method_mut() = http::Method::POST;
    *post.uri_mut() = format!("http://{addr}/order").parse().expect("uri");
    let e = pool.send(post).await.expect_err("not replayed");
    assert!(!e.is_connect(), "{e}");
    assert_eq!(seen.accepted(), 1, "no second connection, no second POST");
    let lines = seen.targets();
    assert_eq!(lines, ["GET /first HTTP/1.1", "POST /order HTTP/1.1"]);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let pool = web_pki_pool(addr, "http", limits());
    let e = pool
        .send(get(addr, "http", "/"))
        .await
        .expect_err("refused");
    assert!(e.is_connect(), "{e}");
}

/// An HTTPS upstream that offers `h2` by ALPN, with a certificate from a CA of its own.
async fn h2_upstream() -> (SocketAddr, Arc<Seen>, rustls::ClientConfig) {
    h2_upstream_with(Arc::new(Notify::new())).await
}

/// The same, closing its connections gracefully (HTTP/2 `GOAWAY`) when `goaway` is
/// notified.
async fn h2_upstream_with(goaway: Arc<Notify>) -> (SocketAddr, Arc<Seen>, rustls::ClientConfig) {
    let pki = testkit::pki::TestPki::issue(&["127.0.0.1"]).expect("pki");
    let server = pki
        .server_config(&[b"h2", b"http/1.1"])
        .expect("server config");
    let client = pki.client_config().expect("client config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (addr, seen) = loopback(move |tcp, s| {
        let (acceptor, goaway) = (acceptor.clone(), Arc::clone(&goaway));
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let on_close = Arc::clone(&s);
            let svc = service_fn(move |req: Request<Incoming>| {
                let s = Arc::clone(&s);
                async move {
                    let target = req.uri().to_string();
                    s.requests
                        .lock()
                        .expect("lock")
                        .push((target, None, req.version()));
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        "h2 hello",
                    ))))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = goaway.notified() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            on_close.closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (addr, seen, client)
}

#[tokio::test]
async fn an_https_upstream_speaking_h2_gets_one_multiplexed_connection() {
    let (addr, seen, tls) = h2_upstream().await;
    let pool = pool(addr, "https", tls, limits());
    let first = pool.send(get(addr, "https", "/one")).await.expect("send");
    assert_eq!(first.version(), http::Version::HTTP_2);
    // Two more while the first body is still unread: the same connection carries them.
    let second = pool.send(get(addr, "https", "/two")).await.expect("send");
    let third = pool.send(get(addr, "https", "/three")).await.expect("send");
    for r in [first, second, third] {
        assert_eq!(body_text(r).await, "h2 hello");
    }
    assert_eq!(seen.accepted(), 1);
    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|(t, _, v)| *v == http::Version::HTTP_2
                && t.starts_with(&format!("https://{addr}/")))
    );
}

#[tokio::test]
async fn an_h2_upstream_going_away_gets_a_new_connection_and_no_failure() {
    let goaway = Arc::new(Notify::new());
    let (addr, seen, tls) = h2_upstream_with(Arc::clone(&goaway)).await;
    let pool = pool(addr, "https", tls, limits());
    body_text(
        pool.send(get(addr, "https", "/before"))
            .await
            .expect("send"),
    )
    .await;
    goaway.notify_waiters();
    eventually("the upstream closed its connection", || {
        seen.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    for path in ["/after", "/again"] {
        let resp = pool.send(get(addr, "https", path)).await.expect("send");
        assert_eq!(body_text(resp).await, "h2 hello");
    }
    assert_eq!(seen.accepted(), 2, "one new connection, shared again");
}

#[tokio::test]
async fn an_https_upstream_with_an_unknown_certificate_is_refused() {
    let (addr, seen, _trusting) = h2_upstream().await;
    let pool = web_pki_pool(addr, "https", limits());
    let e = pool
        .send(get(addr, "https", "/"))
        .await
        .expect_err("untrusted");
    assert!(e.is_connect(), "{e}");
    assert!(seen.requests.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let (addr, seen, tls) = h2_upstream().await;
    let limits = Limits {
        idle_timeout: Duration::from_millis(100),
        ..limits()
    };
    let pool = pool(addr, "https", tls, limits);
    body_text(pool.send(get(addr, "https", "/a")).await.expect("send")).await;
    eventually("the idle HTTP/2 connection is closed", || {
        seen.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(pool.idle.lock().expect("lock").h2.is_none());
    body_text(pool.send(get(addr, "https", "/b")).await.expect("send")).await;
    assert_eq!(seen.accepted(), 2);
}

/// An HTTPS upstream speaking h2 that resets the stream of the first request to `/reset-once`
/// (its service fails: `RST_STREAM`), and answers every other request.
async fn h2_upstream_resetting_once() -> (SocketAddr, Arc<Seen>, rustls::ClientConfig) {
    let pki = testkit::pki::TestPki::issue(&["127.0.0.1"]).expect("pki");
    let server = pki.server_config(&[b"h2"]).expect("server config");
    let client = pki.client_config().expect("client config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let reset = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (addr, seen) = loopback(move |tcp, s| {
        let (acceptor, reset) = (acceptor.clone(), Arc::clone(&reset));
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                let (s, reset) = (Arc::clone(&s), Arc::clone(&reset));
                async move {
                    let target = req.uri().path().to_owned();
                    s.requests
                        .lock()
                        .expect("lock")
                        .push((target.clone(), None, req.version()));
                    if target == "/reset-once" && !reset.swap(true, Ordering::SeqCst) {
                        return Err(std::io::Error::other("reset this stream"));
                    }
                    Ok(Response::new(Full::new(Bytes::from("h2 hello"))))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        }
    })
    .await;
    (addr, seen, client)
}

#[tokio::test]
async fn an_idempotent_request_reset_on_a_shared_h2_connection_is_sent_again_once() {
    let (addr, seen, tls) = h2_upstream_resetting_once().await;
    let pool = pool(addr, "https", tls, limits());
    body_text(pool.send(get(addr, "https", "/first")).await.expect("send")).await;
    let resp = pool
        .send(get(addr, "https", "/reset-once"))
        .await
        .expect("sent again on a new connection");
    assert_eq!(body_text(resp).await, "h2 hello");
    assert_eq!(seen.targets(), ["/first", "/reset-once", "/reset-once"]);
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn a_request_with_a_body_reset_on_a_shared_h2_connection_is_not_sent_again() {
    let (addr, seen, tls) = h2_upstream_resetting_once().await;
    let pool = pool(addr, "https", tls, limits());
    body_text(pool.send(get(addr, "https", "/first")).await.expect("send")).await;
    let mut post = Request::new(Limited::new(axum::body::Body::from("x"), 1024));
    *post.method_mut() = http::Method::POST;
    *post.uri_mut() = format!("https://{addr}/reset-once").parse().expect("uri");
    assert!(
        pool.send(post).await.is_err(),
        "the upstream may have acted on it"
    );
    assert_eq!(seen.targets(), ["/first", "/reset-once"]);
}
