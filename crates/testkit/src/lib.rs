//! Test fixtures for Portcullis that start **real** processes and servers on
//! loopback:
//!
//! - [`idp`]: an OpenID Provider (oidc-provider 9.13.3 on Node.js) with one
//!   confidential client and a test user who signs in through an HTML form;
//! - [`upstream`]: a recording HTTP upstream;
//! - [`browser`]: a cookie-keeping HTTP client that acts like a browser
//!   (manual redirects, `__Host-`/`Secure`/`SameSite` rules, form login);
//! - [`cookies`]: the cookie jar behind it;
//! - [`chromium`]: real headless Chromium (Debian's `chromium` driven by
//!   `playwright-core`): pages, console, page errors, requests, CSP violations;
//! - [`redis`]: real `redis-server` processes (standalone with optional ACL
//!   user and TLS, or a cluster) and a small RESP client;
//! - [`scripted`]: an HTTP upstream answering per path as the test scripts it (JSON, raw,
//!   delays, answers held until another request arrives, no answer at all);
//! - [`faults`]: a TCP proxy that delays, stalls, refuses or resets traffic on demand;
//! - [`streaming`]: an SSE upstream that releases events on the test's cue, and a
//!   recording WebSocket echo upstream;
//! - [`free_port`].
//!
//! See `crates/testkit/README.md`.

pub mod browser;
pub mod chromium;
pub mod cookies;
pub mod faults;
pub mod html;
pub mod idp;
mod log_tail;
mod npm;
pub mod pki;
pub mod redis;
pub mod scripted;
pub mod streaming;
pub mod upstream;

pub use browser::{Browser, LoginOutcome, Response};
pub use chromium::{Chromium, ChromiumSession, PageReport};
pub use faults::{Fault, FaultProxy};
pub use idp::{Idp, IdpOptions, Stats};
pub use redis::{RedisCluster, RedisOptions, RedisServer};
pub use upstream::{RecordedRequest, RecordingUpstream};

/// A port that was free on 127.0.0.1 a moment ago (bind `127.0.0.1:0`, read
/// the port, close). Another process may take it before you bind it again:
/// where possible bind your listener first and pass the port along instead.
///
/// # Panics
/// If no loopback port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Serves `app` on `listener` in the background until the returned sender is used or dropped;
/// `label` names the server in the error line printed if it fails.
pub fn spawn_router(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    label: &'static str,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            eprintln!("[{label}] server error: {e}");
        }
    });
    tx
}
