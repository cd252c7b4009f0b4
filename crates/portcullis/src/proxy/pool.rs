//! The upstream connection pool of one route on one worker thread.
//!
//! Why not `hyper_util`'s pooled client: that pool is keyed by scheme and authority, so every
//! request hashes its key (SipHash, three times) under a lock, and every HTTP/1 response spawns
//! a task that waits for the connection to become idle again. Here a route has exactly one
//! upstream and a worker thread has its own pool (see `server::PerWorker`), so the pool is a
//! stack of idle connections with no key, and a connection goes back on the stack when the
//! browser's response body ends: no task, no hashing. Measured in docs/performance.md.
//!
//! Behaviour kept from the client it replaces:
//! * HTTP/1.1, or HTTP/2 when TLS negotiates `h2` by ALPN (one multiplexed connection);
//! * a request that a reused connection never wrote (the upstream closed it while idle) is
//!   sent again once, on a new connection; so is an idempotent request without a body that
//!   was written but got no answer before the connection closed (RFC 9112 §9.3.1); nothing
//!   else is ever replayed;
//! * idle connections are closed after `idle_timeout`, and at most `max_idle` are kept;
//! * connect timeout, TCP_NODELAY and TCP keep-alive on the socket; no redirects followed.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::legacy::connect::{Connection, HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tower::ServiceExt;

use super::client::UpstreamBody;

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// The route's connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// One route's connections on one worker thread. Shared by `Arc` with the response bodies that
/// will hand their connection back.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// The upstream's origin, the URI the connector dials.
    origin: Uri,
    /// `Host` for HTTP/1 requests (HTTP/2 sends `:authority` from the absolute URI instead).
    host: HeaderValue,
    limits: Limits,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Ready HTTP/1 connections, most recently used last (reused first: it is the least likely
    /// to have been closed by the upstream's own idle timeout).
    h1: Vec<Parked>,
    /// The HTTP/2 connection, shared by every request while it stays open.
    h2: Option<http2::SendRequest<UpstreamBody>>,
    /// Reaper ticks so far; a connection parked two ticks ago has idled at least `idle_timeout / 2`.
    tick: u64,
    reaper: bool,
}

struct Parked {
    sender: http1::SendRequest<UpstreamBody>,
    tick: u64,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection: DNS, TCP, TLS or the HTTP/2 handshake failed.
    Connect(Box<dyn StdError + Send + Sync>),
    /// The exchange failed on an open connection (the request body's own errors included).
    Exchange(hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "upstream connection failed: {e}"),
            SendError::Exchange(e) => write!(f, "upstream exchange failed: {e}"),
        }
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Connect(e) => Some(e.as_ref()),
            SendError::Exchange(e) => Some(e),
        }
    }
}

/// What it takes to send an idempotent, bodiless request again: kept only for requests on a
/// reused connection, the ones an upstream's idle close can catch in flight.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(req: &Request<UpstreamBody>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        (idempotent && req.body().is_end_stream()).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        })
    }

    fn request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(http_body_util::Limited::new(axum::body::Body::empty(), 0));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// The connection ended before any response: closed or reset by the peer. Not a timeout, not a
/// malformed answer.
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

enum Conn {
    H1 {
        sender: http1::SendRequest<UpstreamBody>,
        reused: bool,
    },
    H2 {
        sender: http2::SendRequest<UpstreamBody>,
        reused: bool,
    },
}

impl Pool {
    /// `upstream` is the route's base URL; `tls` the rustls configuration for `https` (no ALPN
    /// set: the pool offers `h2` and `http/1.1`).
    pub fn new(
        upstream: &url::Url,
        tls: rustls::ClientConfig,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let host = upstream
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("upstream {upstream} has no host"))?;
        // `Url` leaves the port out when it is the scheme's default, as `Host` should.
        let host = match upstream.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let origin: Uri = format!("{}://{host}/", upstream.scheme()).parse()?;
        Ok(Pool {
            connector,
            origin,
            host: HeaderValue::from_str(&host)?,
            limits,
            idle: Mutex::new(Idle::default()),
        })
    }

    /// Sends `req` (an absolute URI on this pool's upstream) and returns the response head; the
    /// connection returns to the pool when the response body has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        // After a retry, only a new connection will do: at most two attempts.
        let mut fresh_only = false;
        loop {
            let parked = if fresh_only { None } else { self.checkout() };
            let conn = match parked {
                Some(c) => c,
                // Boxed: the connector's and handshakes' state is kilobytes, and would otherwise
                // be part of (and copied with) every request's future, not only those that connect.
                None => Box::pin(self.connect()).await?,
            };
            match conn {
                Conn::H2 { mut sender, reused } => match sender.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok(resp.map(|inner| ResponseBody {
                            inner,
                            give_back: None,
                        }));
                    }
                    // Never sent: the shared connection was going away (GOAWAY, a close).
                    // Once more, on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if reused => {
                            tracing::debug!(error = %e.error(), "pooled upstream HTTP/2 connection was closed; retrying on a new one");
                            req = unsent;
                            self.forget_h2();
                            fresh_only = true;
                        }
                        _ => return Err(SendError::Exchange(e.into_error())),
                    },
                },
                Conn::H1 { mut sender, reused } => {
                    if !req.headers().contains_key(header::HOST) {
                        req.headers_mut().insert(header::HOST, self.host.clone());
                    }
                    // HTTP/1 to an origin server: the request target in origin form.
                    let absolute = std::mem::take(req.uri_mut());
                    *req.uri_mut() = absolute
                        .path_and_query()
                        .cloned()
                        .map_or_else(|| Uri::from_static("/"), Uri::from);
                    let replay = reused.then(|| Replay::of(&req)).flatten();
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            let give_back = GiveBack {
                                pool: Arc::downgrade(self),
                                sender: Some(sender),
                            };
                            return Ok(resp.map(|inner| ResponseBody {
                                inner,
                                give_back: Some(give_back),
                            }));
                        }
                        Err(mut e) => {
                            // A parked connection the upstream had closed. Once more, on a
                            // connection of our own, if the request was never written, or if
                            // it is idempotent and bodiless and no answer came (RFC 9110 §9.2.2,
                            // RFC 9112 §9.3.1): the upstream may or may not have acted on it,
                            // and for such a request that makes no difference.
                            let retry = match (e.take_message(), replay) {
                                (Some(unsent), _) if reused => Some(unsent),
                                (None, Some(replay)) if closed_before_answer(e.error()) => {
                                    Some(replay.request())
                                }
                                _ => None,
                            };
                            let Some(again) = retry else {
                                return Err(SendError::Exchange(e.into_error()));
                            };
                            tracing::debug!(error = %e.error(), "pooled upstream connection was closed; retrying on a new one");
                            req = again;
                            *req.uri_mut() = absolute;
                            self.discard_idle_h1();
                            fresh_only = true;
                        }
                    }
                }
            }
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle();
        if let Some(h2) = &idle.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2 {
                    sender: h2.clone(),
                    reused: true,
                });
            }
            idle.h2 = None;
        }
        while let Some(parked) = idle.h1.pop() {
            if parked.sender.is_ready() {
                return Some(Conn::H1 {
                    sender: parked.sender,
                    reused: true,
                });
            }
        }
        None
    }

    /// After a parked connection turned out closed, the others parked as long or longer are
    /// likely closed too (an upstream restart, its idle timeout): drop them all.
    fn discard_idle_h1(&self) {
        self.idle().h1.clear();
    }

    /// The idle connections. A panic while holding the lock leaves nothing half-updated that
    /// matters (a stack of handles), so a poisoned lock is used as is.
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops sharing the HTTP/2 connection that refused a request; the next one connects anew.
    fn forget_h2(&self) {
        self.idle().h2 = None;
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, SendError> {
        let io: Io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            drive(conn, "HTTP/2");
            let mut idle = self.idle();
            // Two requests may have raced to connect; keep the newest, the other closes when
            // its last request is done.
            idle.h2 = Some(sender.clone());
            return Ok(Conn::H2 {
                sender,
                reused: false,
            });
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        drive(conn, "HTTP/1");
        Ok(Conn::H1 {
            sender,
            reused: false,
        })
    }

    /// Called from a body's `Drop`, so it never panics: without a runtime to run the reaper on
    /// (the body dropped outside one), the connection is closed rather than parked.
    fn park(self: &Arc<Self>, sender: http1::SendRequest<UpstreamBody>) {
        let mut idle = self.idle();
        if idle.h1.len() >= self.limits.max_idle {
            return; // dropping the sender closes the connection
        }
        if !idle.reaper {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(reap(Arc::downgrade(self), self.limits.idle_timeout));
            idle.reaper = true;
        }
        let tick = idle.tick;
        idle.h1.push(Parked { sender, tick });
    }
}

/// Runs a connection's driver task on this worker until the connection ends.
fn drive<C, E>(conn: C, protocol: &'static str)
where
    C: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

/// Closes connections idle for `idle_timeout / 2` to `idle_timeout`, never longer, on the pool's own
/// thread, until the pool is dropped.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle();
        idle.tick += 1;
        let now = idle.tick;
        idle.h1
            .retain(|p| now - p.tick < 2 && !p.sender.is_closed());
        if idle.h2.as_ref().is_some_and(|s| s.is_closed()) {
            idle.h2 = None;
        }
    }
}

/// Hands an HTTP/1 connection back when the response body is done with it.
struct GiveBack {
    pool: Weak<Pool>,
    sender: Option<http1::SendRequest<UpstreamBody>>,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) else {
            return;
        };
        if sender.is_ready() {
            pool.park(sender);
        } else if !sender.is_closed() && tokio::runtime::Handle::try_current().is_ok() {
            // The connection task has not caught up with the end of the body yet (or the body
            // was dropped early and is being drained): park it once it is idle.
            let mut sender = sender;
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.park(sender);
                }
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body; at its end, the connection goes back to the pool.
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        give_back: Option<GiveBack>,
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            drop(this.give_back.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
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

    fn pool(
        addr: SocketAddr,
        scheme: &str,
        tls: rustls::ClientConfig,
        limits: Limits,
    ) -> Arc<Pool> {
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
                        s.requests.lock().expect("lock").push((
                            target.clone(),
                            host,
                            req.version(),
                        ));
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
            || {
                pool.idle.lock().expect("lock").h1.len() == 2
                    && seen.closed.load(Ordering::SeqCst) == 2
            },
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
    async fn h2_upstream_with(
        goaway: Arc<Notify>,
    ) -> (SocketAddr, Arc<Seen>, rustls::ClientConfig) {
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
            requests.iter().all(|(t, _, v)| *v == http::Version::HTTP_2
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
}
