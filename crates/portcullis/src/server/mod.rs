//! The listener: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, header size limits, and a
//! graceful shutdown on SIGTERM/SIGINT that drains in-flight requests.

mod tls;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::{AppState, app, config::Config};

/// How long a connection may take to send a request's headers. hyper also applies it to the wait
/// for the next request on an idle keep-alive connection, so it must outlast load balancers' idle
/// timeouts (AWS ALB: 60 s by default), or they reuse connections we are closing and answer 502.
/// 75 s is nginx's keep-alive default.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Loads everything, starts provider discovery in the background and serves until a signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen).await?;
    let admin = match &config.admin {
        Some(a) => Some(TcpListener::bind(a.listen).await?),
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
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    if let Some(listener) = admin {
        serve_admin(listener, state.clone(), admin_stopped);
    }
    let result = run(listener, state, shutdown_signal()).await;
    let _ = stop_admin.send(true);
    result
}

/// The operators' listener (see `crate::admin`), stopped together with the main one.
pub fn serve_admin(
    listener: TcpListener,
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        tracing::info!(addr = ?listener.local_addr().ok(), "admin listener");
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, crate::admin::router(state))
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
}

/// Serves `state` on an already bound listener until `shutdown` completes (tests bind port 0).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let tls = match &state.config.server.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    let max_header = state.config.server.max_header_bytes;
    let router: Router = app(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(max_header.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |req: http::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let builder = Arc::clone(&builder);
        match &tls {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            _ => return,
                        };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing"),
    }
    Ok(())
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
