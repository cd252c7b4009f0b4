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
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use http::{HeaderValue, Request, Response, Uri, header};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::legacy::connect::{Connection, HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tower::ServiceExt;

use super::client::UpstreamBody;

mod body;
mod retry;

use body::GiveBack;
pub use body::ResponseBody;
use retry::{Replay, closed_before_answer};

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
    /// The reaper tick at which the HTTP/2 connection was last handed out: it is let go (and
    /// closes once its last stream ends) after `idle_timeout` unused, as HTTP/1 connections are.
    h2_tick: u64,
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
                Conn::H2 { mut sender, reused } => {
                    let replay = reused.then(|| Replay::of(&req)).flatten();
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            return Ok(resp.map(|inner| ResponseBody {
                                inner,
                                give_back: None,
                            }));
                        }
                        // On the shared connection, once more on a new one: a request never
                        // sent (the connection was going away), or an idempotent bodiless one
                        // that got no answer (refused, reset, or above a GOAWAY's last stream:
                        // RFC 9113 §8.7, RFC 9110 §9.2.2).
                        Err(mut e) => {
                            let retry = match (e.take_message(), replay) {
                                (Some(unsent), _) if reused => Some(unsent),
                                (None, Some(replay)) => Some(replay.request()),
                                _ => None,
                            };
                            let Some(again) = retry else {
                                return Err(SendError::Exchange(e.into_error()));
                            };
                            tracing::debug!(error = %e.error(), "request on the pooled upstream HTTP/2 connection failed; retrying on a new one");
                            req = again;
                            self.forget_h2();
                            fresh_only = true;
                        }
                    }
                }
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
                let sender = h2.clone();
                idle.h2_tick = idle.tick;
                return Some(Conn::H2 {
                    sender,
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
            if self.ensure_reaper(&mut idle) {
                idle.h2 = Some(sender.clone());
                idle.h2_tick = idle.tick;
            }
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
        if !self.ensure_reaper(&mut idle) {
            return;
        }
        let tick = idle.tick;
        idle.h1.push(Parked { sender, tick });
    }

    /// Starts the reaper if it is not running; `false` without a runtime to run it on (then
    /// nothing may be kept idle: it would never be closed).
    fn ensure_reaper(self: &Arc<Self>, idle: &mut Idle) -> bool {
        if !idle.reaper {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            runtime.spawn(reap(Arc::downgrade(self), self.limits.idle_timeout));
            idle.reaper = true;
        }
        true
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
        if idle
            .h2
            .as_ref()
            .is_some_and(|s| s.is_closed() || now - idle.h2_tick >= 2)
        {
            // Streams in flight keep their own handles; the connection closes after them.
            idle.h2 = None;
        }
    }
}

#[cfg(test)]
mod tests;
