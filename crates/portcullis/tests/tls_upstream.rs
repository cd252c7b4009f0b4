//! An `https` upstream behind a private CA (`ca_file` on the route): a real login, then API
//! calls through the gateway to a TLS upstream on loopback whose certificate only the route's
//! CA vouches for. The same upstream on a route without `ca_file` (the public web PKI) is
//! refused before any request reaches it.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use common::{Options, Stack, running::write_secret};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::browser::Browser;

/// A TLS upstream (ALPN h2 and http/1.1) answering what it received: whether a bearer token
/// and a cookie came, and the path. Returns its port, the CA's PEM and a request counter.
async fn tls_upstream() -> (u16, String, Arc<AtomicUsize>) {
    let pki = testkit::pki::TestPki::issue(&["localhost"]).expect("pki");
    let cfg = pki
        .server_config(&[b"h2", b"http/1.1"])
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let bearer = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 20);
                    let body = serde_json::json!({
                        "bearer": bearer,
                        "cookie": req.headers().contains_key("cookie"),
                        "path": req.uri().path(),
                        "version": format!("{:?}", req.version()),
                    });
                    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                    resp.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, pki.ca_pem, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_a_private_ca_reaches_its_https_upstream_and_only_with_it() {
    let (port, ca_pem, count) = tls_upstream().await;
    let ca_file = write_secret("ca.pem", &ca_pem);
    let stack = Stack::start_with(Options {
        extra_toml: format!(
            r#"
[[routes]]
prefix = "/private"
upstream = "https://localhost:{port}/v1"
ca_file = "{ca_file}"
timeout = "5s"

[[routes]]
prefix = "/public-pki"
upstream = "https://localhost:{port}/v1"
timeout = "5s"
"#
        ),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    stack.login(&b).await;

    let r = b.get(&stack.url("/private/orders/7")).await.expect("get");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let seen = r.json().expect("json");
    assert_eq!(
        seen["bearer"], true,
        "the access token went to the upstream"
    );
    assert_eq!(seen["cookie"], false, "the browser's cookie did not");
    assert_eq!(seen["path"], "/v1/orders/7");
    assert_eq!(seen["version"], "HTTP/2.0", "h2 by ALPN");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // The same upstream judged by the public web PKI: no connection, no request, 502.
    let r = b
        .get(&stack.url("/public-pki/orders/7"))
        .await
        .expect("get");
    assert_eq!(r.status.as_u16(), 502, "{}", r.text());
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "nothing reached the upstream"
    );
}
