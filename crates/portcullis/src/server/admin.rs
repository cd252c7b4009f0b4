//! The operators' listener (see `crate::admin`): its own address, plain HTTP/1.1, with the
//! public listener's `server.header_read_timeout` from the connection's start, so a client that
//! never finishes its headers (it has no token to show yet) is cut instead of holding a
//! descriptor for ever.

use std::{sync::Arc, time::Duration};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::Live;
use crate::AppState;

/// How long admin requests in flight may finish after the stop.
const DRAIN: Duration = Duration::from_secs(5);

/// The operators' listener for a fixed state (tests).
pub fn serve_admin(
    listener: TcpListener,
    state: AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serve_live_admin(listener, Live::new(state), stop);
}

/// The operators' listener on the live state, stopped together with the main one.
pub fn serve_live_admin(
    listener: TcpListener,
    live: Arc<Live>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let within = live.state().config.server.header_read_timeout;
    // HTTP/1.1 only: what operators' tools and Prometheus speak, and hyper's HTTP/1.1 server
    // times a request head from the connection's start (its HTTP/2 server has no such timer).
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(within);
    let builder = Arc::new(builder);
    tokio::spawn(async move {
        tracing::info!(addr = ?listener.local_addr().ok(), "admin listener");
        let graceful = GracefulShutdown::new();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (builder, live) = (Arc::clone(&builder), Arc::clone(&live));
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                                live.admin().oneshot(req.map(axum::body::Body::new))
                            });
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, "admin connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stopped => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    });
}
