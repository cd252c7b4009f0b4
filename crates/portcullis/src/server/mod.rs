//! The listener: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, header size limits, hot
//! reload on SIGHUP (see [`crate::reload`]), and a graceful shutdown on SIGTERM/SIGINT:
//! readiness fails at once, new connections are still accepted for `server.shutdown_delay` (so
//! load balancers notice), then the listener closes, WebSocket/SSE streams are told to go away
//! and in-flight requests drain for up to `server.drain_timeout`. Accepted connections are served
//! on worker threads, one connection on one thread for its whole life (`server/workers.rs`).

mod admin;
mod idle;
mod live;
pub(crate) mod tls;
mod workers;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub use admin::{serve_admin, serve_live_admin};
pub use live::Live;
pub use workers::{PerWorker, default_count as default_worker_count};

use crate::{AppState, config::Config, reload::Reloader};

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accept queue's length (capped by the kernel's `net.core.somaxconn`). The Tokio and std
/// default of 128 overflows under a burst of a few hundred connections: the kernel then drops
/// the handshakes' last ACKs, clients retry after a second or more, and with SYN cookies a
/// connection can be lost on the server's side while its client thinks it is established.
/// nginx uses 511; a gateway in front of every API call gets bursts.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, so a restart does
/// not wait for the old connections' `TIME_WAIT`).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// [`bind`], with the key and address in the error: "Address already in use" alone does not
/// tell an operator which of the listeners it was.
fn bind_for(key: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    bind(addr).with_context(|| format!("{key} {addr}: cannot listen"))
}

/// Loads everything, starts provider discovery in the background and serves until a signal.
/// `path` is the config file, re-read on SIGHUP.
pub async fn serve(config: Config, path: PathBuf, hangup: Hangup) -> anyhow::Result<()> {
    let listener = bind_for("server.listen", config.server.listen)?;
    let admin = match &config.admin {
        Some(a) => Some(bind_for("admin.listen", a.listen)?),
        None => None,
    };
    let state = AppState::new(config)?;
    if state.config.oidc.password_grant {
        tracing::warn!(
            "oidc.password_grant is on: POST {}/handshake accepts passwords and uses the resource owner password grant, which RFC 9700 (OAuth 2.0 Security BCP) says must not be used; prefer the authorization code flow",
            state.config.bff_prefix
        );
    }
    state.oidc.spawn_discovery();
    let live = Live::new(state);
    let reloader = Arc::new(Reloader::new(path, live.clone()));
    live.set_reloader(&reloader);
    reload_on_sighup(hangup, reloader);
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    if let Some(listener) = admin {
        serve_live_admin(listener, Arc::clone(&live), admin_stopped);
    }
    let result = run_live(listener, live, shutdown_signal()).await;
    let _ = stop_admin.send(true);
    result
}

/// SIGHUP, taken over from its default action (ending the process) as early as possible: a
/// reload sent while the process is still starting (`systemctl start` then `reload`) must not
/// kill it, and systemd counts a death by SIGHUP as a clean exit, so it would not restart it.
/// A SIGHUP received before serving starts is one reload right after.
#[derive(Debug)]
pub struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    /// Installs the handler; needs a Tokio runtime.
    pub fn listen() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(hup) => Hangup(Some(hup)),
                Err(e) => {
                    eprintln!(
                        "warning: cannot listen for SIGHUP ({e}); reload via the admin listener only"
                    );
                    Hangup(None)
                }
            }
        }
        #[cfg(not(unix))]
        Hangup()
    }
}

#[cfg(unix)]
fn reload_on_sighup(hangup: Hangup, reloader: Arc<Reloader>) {
    let Hangup(Some(mut hup)) = hangup else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            // Logged and counted inside; the old config keeps serving on error.
            let _ = reloader.reload().await;
        }
    });
}

#[cfg(not(unix))]
fn reload_on_sighup(_hangup: Hangup, _reloader: Arc<Reloader>) {}

/// Serves `state` on an already bound listener until `shutdown` completes (tests bind port 0).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_live(listener, Live::new(state), shutdown).await
}

/// Serves the live state until `shutdown`, then stops as the module docs say.
pub async fn run_live(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let state = live.state();
    let tls = match &state.config.server.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let max_header = state.config.server.max_header_bytes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // `server.header_read_timeout` (default 75 s): how long a connection may take to send a
        // request's headers. hyper also applies it to the wait for the next request on an idle
        // keep-alive connection, so it must outlast load balancers' idle timeouts (AWS ALB: 60 s
        // by default), or they reuse connections we are closing and answer 502. 75 s is nginx's
        // keep-alive default. Slow-header (slowloris) clients are cut when it expires.
        .header_read_timeout(state.config.server.header_read_timeout)
        .max_buf_size(max_header.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
    let header_read_timeout = state.config.server.header_read_timeout;
    drop(state);
    let conns = Connections {
        builder: Arc::new(builder),
        header_read_timeout,
        tls,
        graceful: GracefulShutdown::new(),
        live: Arc::clone(&live),
        workers: workers::Workers::start(live.state().config.server.worker_threads)?,
    };
    tracing::info!(addr = %listener.local_addr()?, tls = conns.tls.is_some(), "listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => conns.accepted(accepted).await,
            () = &mut shutdown => break,
        }
    }
    // Unready first; keep accepting while load balancers notice.
    live.state().lifecycle.start_draining();
    let delay = live.state().config.server.shutdown_delay;
    tracing::info!(
        ?delay,
        "shutting down: readiness fails now; still accepting for the delay"
    );
    let delay = tokio::time::sleep(delay);
    tokio::pin!(delay);
    loop {
        tokio::select! {
            biased;
            () = &mut delay => break,
            accepted = listener.accept() => conns.accepted(accepted).await,
        }
    }
    drop(listener);
    let streams = live.close_streams();
    let drain = live.state().config.server.drain_timeout;
    tracing::info!(streams, ?drain, "listener closed: draining connections");
    tokio::select! {
        () = conns.graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; closing"),
    }
    Ok(())
}

/// Serves accepted connections on the live routers, watched for the graceful shutdown.
struct Connections {
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// `server.header_read_timeout`, also the idle watchdog's period (`idle`).
    header_read_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    graceful: GracefulShutdown,
    live: Arc<Live>,
    /// Dropped last (after the drain), which stops the worker threads.
    workers: workers::Workers,
}

impl Connections {
    async fn accepted(&self, accepted: std::io::Result<(TcpStream, std::net::SocketAddr)>) {
        match accepted {
            Ok((stream, peer)) => self.spawn(stream, peer),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Hands the connection to the next worker thread, where it stays until it closes.
    fn spawn(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        let _ = stream.set_nodelay(true);
        // A socket is registered with one runtime's reactor: leave this one, join the worker's.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the connection to a worker");
                return;
            }
        };
        let service = PublicService {
            live: Arc::clone(&self.live),
            peer,
            activity: Arc::default(),
        };
        let builder = Arc::clone(&self.builder);
        let tls = self.tls.clone();
        let watcher = self.graceful.watcher();
        let within = self.header_read_timeout;
        let activity = Arc::downgrade(&service.activity);
        // Dropped with the connection's task (ended or aborted): the watchdog then ends too.
        let (open, gone) = tokio::sync::oneshot::channel::<()>();
        let worker = self.workers.next();
        let connection = worker.spawn(async move {
            let _open = open;
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "worker cannot register the connection");
                    return;
                }
            };
            match tls {
                None => serve_connection(&builder, stream, service, watcher).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await
                    {
                        serve_connection(&builder, stream, service, watcher).await;
                    }
                }
            }
        });
        // Aborting the connection's task drops (closes) it; nothing is in flight on it (`idle`).
        let abort = connection.abort_handle();
        worker.spawn(async move {
            if idle::Activity::watch(activity, within, gone).await {
                tracing::debug!("unused connection closed");
                abort.abort();
            }
        });
    }
}

/// Serves one connection's requests (HTTP/1.1 with upgrades, or HTTP/2) until it closes.
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: PublicService,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The public routers as a hyper service for one connection: each request runs on the routers
/// current when it arrives (see `live`), and knows the peer's address.
#[derive(Clone)]
struct PublicService {
    live: Arc<Live>,
    peer: std::net::SocketAddr,
    /// The connection's requests, for the idle watchdog (`idle`).
    activity: Arc<idle::Activity>,
}

pin_project_lite::pin_project! {
    /// A request's response future, holding an HTTP/2 request's in-flight guard until it hands
    /// it to the response body.
    struct Tracked {
        #[pin]
        inner: tower::util::Oneshot<crate::Public, axum::extract::Request>,
        in_flight: Option<idle::InFlight>,
    }
}

impl std::future::Future for Tracked {
    type Output = Result<axum::response::Response, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        std::task::Poll::Ready(response.map(|r| match this.in_flight.take() {
            Some(guard) => guard.attach(r),
            None => r,
        }))
    }
}

impl hyper::service::Service<http::Request<Incoming>> for PublicService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Tracked;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.started(req.version());
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut()
            .insert(crate::http::hygiene::FromListener {
                arrived: std::time::Instant::now(),
            });
        Tracked {
            inner: self.live.public().oneshot(req),
            in_flight,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
