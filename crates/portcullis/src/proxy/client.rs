//! Upstream client settings shared by the route pools (`pool/`) and the WebSocket handshake
//! client: rustls with the ring provider and the Mozilla root set, TCP_NODELAY, keep-alive, no
//! redirect following (a proxy passes redirects through).

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use http_body_util::Limited;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

use crate::config::RouteConfig;

pub type UpstreamBody = Limited<Body>;
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Idle connections kept per route and worker thread.
pub const MAX_IDLE: usize = 256;

/// TLS to upstreams: the public web PKI (Mozilla's roots), rustls's safe protocol versions.
pub fn web_pki_tls() -> anyhow::Result<rustls::ClientConfig> {
    with_roots(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    })
}

/// TLS to this route's upstream: its `ca_file` roots *instead of* the public web PKI (a
/// certificate from a public CA does not pass for a private upstream), else Mozilla's roots.
pub fn tls_for(route: &RouteConfig) -> anyhow::Result<rustls::ClientConfig> {
    let Some(pem) = &route.ca_pem else {
        return web_pki_tls();
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    with_roots(roots)
}

fn with_roots(roots: rustls::RootCertStore) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// HTTP/1.1 only, for WebSocket handshakes: the `Upgrade` mechanism does not exist in HTTP/2,
/// so ALPN must not pick h2 on a `wss` upstream.
pub fn build_http1(
    route: &RouteConfig,
    tls: rustls::ClientConfig,
) -> anyhow::Result<UpstreamClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(route.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(route.idle_timeout)
        .pool_max_idle_per_host(MAX_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}
