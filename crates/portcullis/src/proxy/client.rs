//! The pooled upstream HTTP client: HTTP/1.1 and HTTP/2 (ALPN over TLS), rustls with the ring
//! provider and the Mozilla root set, keep-alive pooling, TCP_NODELAY, no redirect following (a
//! proxy passes redirects through).

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http_body_util::Limited;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

pub type UpstreamBody = Limited<Body>;
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

pub fn build(connect_timeout: Duration) -> anyhow::Result<UpstreamClient> {
    build_with(connect_timeout, true)
}

/// HTTP/1.1 only, for WebSocket handshakes: the `Upgrade` mechanism does not exist in HTTP/2,
/// so ALPN must not pick h2 on a `wss` upstream.
pub fn build_http1(connect_timeout: Duration) -> anyhow::Result<UpstreamClient> {
    build_with(connect_timeout, false)
}

fn build_with(connect_timeout: Duration, http2: bool) -> anyhow::Result<UpstreamClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_http1();
    let https = if http2 {
        https.enable_http2().wrap_connector(http)
    } else {
        https.wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}
