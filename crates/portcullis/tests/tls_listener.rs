//! The TLS listener (`[server] tls`, rustls): a real gateway on loopback with a certificate from
//! a CA of the test's own, reached by clients that trust that CA: HTTP/2 and HTTP/1.1 by ALPN,
//! TLS 1.3 and 1.2, HSTS on the `https` origin, the same refusals as over plain HTTP, and no
//! answer at all to plaintext or to a client that does not trust the certificate.

mod common;

use std::{path::Path, time::Duration};

use common::running::{BoundPort, write_secret};
use portcullis::crypto::keyring::KeyRing;
use testkit::{
    idp::{Idp, IdpOptions},
    pki::TestPki,
    upstream::RecordingUpstream,
};

/// A CA, and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM files in
/// `dir`; returns the CA's PEM.
fn certificates(dir: &Path) -> String {
    let pki = TestPki::issue(&["localhost", "127.0.0.1"]).expect("pki");
    std::fs::write(dir.join("cert.pem"), &pki.cert_pem).expect("cert file");
    std::fs::write(dir.join("key.pem"), &pki.key_pem).expect("key file");
    pki.ca_pem
}

struct TlsGateway {
    base: String,
    ca_pem: String,
    _gateway: common::running::RunningGateway,
    _idp: Idp,
    upstream: RecordingUpstream,
    dir: std::path::PathBuf,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> TlsGateway {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-tls-{}-{}",
        std::process::id(),
        portcullis::crypto::random::token::<6>().expect("rng")
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_pem = certificates(&dir);
    let bound = BoundPort::bind().await;
    let base = format!("https://localhost:{}", bound.port);
    let idp = Idp::start(IdpOptions::new(format!("{base}/bff/callback")))
        .await
        .expect("provider");
    let upstream = RecordingUpstream::start().await;
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", idp.client_secret());
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"
tls = {{ cert_file = "{cert}", key_file = "{key}" }}

[session]
keys_file = "{keys}"

[oidc]
issuer = "{issuer}"
client_id = "{client}"
client_secret_file = "{secret}"

[[routes]]
prefix = "/api"
upstream = "{up}"
timeout = "2s"
"#,
        port = bound.port,
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
        issuer = idp.issuer(),
        client = idp.client_id(),
        up = upstream.url(),
    );
    let gateway = bound.serve(&toml).await;
    TlsGateway {
        base,
        ca_pem,
        _gateway: gateway,
        _idp: idp,
        upstream,
        dir,
    }
}

fn client(ca_pem: Option<&str>) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA"));
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_speaks_h2_and_http1_over_tls_1_3_and_1_2() {
    let gw = start().await;
    let url = format!("{}/healthz", gw.base);

    let h2 = client(Some(&gw.ca_pem)).build().expect("client");
    let r = h2.get(&url).send().await.expect("h2 request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=63072000; includeSubDomains"),
        "HSTS on an https origin"
    );

    let h1 = client(Some(&gw.ca_pem))
        .http1_only()
        .build()
        .expect("client");
    let r = h1.get(&url).send().await.expect("http/1.1 request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_11);

    let tls12 = client(Some(&gw.ca_pem))
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    let r = tls12.get(&url).send().await.expect("TLS 1.2 request");
    assert_eq!(r.status(), 200);
    let tls13 = client(Some(&gw.ca_pem))
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .expect("client");
    assert_eq!(tls13.get(&url).send().await.expect("TLS 1.3").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_gateway_refuses_what_it_refuses_over_http() {
    let gw = start().await;
    let c = client(Some(&gw.ca_pem)).build().expect("client");
    // No session: 401 problem, nothing upstream, on both protocols.
    for http1 in [false, true] {
        let c = if http1 {
            client(Some(&gw.ca_pem))
                .http1_only()
                .build()
                .expect("client")
        } else {
            c.clone()
        };
        let r = c
            .get(format!("{}/api/orders", gw.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        // A state-changing request without a CSRF token: 403 before anything else.
        let r = c
            .post(format!("{}/api/orders", gw.base))
            .header("origin", &gw.base)
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 403);
    }
    // RFC 9113 §8.3.1: over HTTP/2, a `Host` naming another authority than `:authority` is a
    // malformed request (400); the same authority is not.
    let authority = gw.base.trim_start_matches("https://").to_owned();
    for (host, status) in [("evil.example", 400), (authority.as_str(), 401)] {
        let r = c
            .get(format!("{}/api/orders", gw.base))
            .header("host", host)
            .send()
            .await
            .expect("request");
        assert_eq!(r.version(), http::Version::HTTP_2);
        assert_eq!(r.status(), status, "Host: {host}");
    }
    assert_eq!(gw.upstream.count(), 0, "no upstream was contacted");
    // The login starts as over plain HTTP, with the login-state cookie `Secure` on https.
    let r = c
        .get(format!("{}/bff/login", gw.base))
        .send()
        .await
        .expect("login");
    assert!(r.status().is_redirection(), "{}", r.status());
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(!cookies.is_empty());
    assert!(
        cookies
            .iter()
            .all(|c| c.contains("Secure") && c.contains("HttpOnly"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusting_clients_get_no_answer() {
    let gw = start().await;
    let url = format!("{}/healthz", gw.base);
    let untrusting = client(None).build().expect("client");
    let e = untrusting
        .get(&url)
        .send()
        .await
        .expect_err("the certificate is not trusted");
    assert!(e.is_connect() || e.is_request(), "{e}");

    let plaintext = client(None).build().expect("client");
    let r = plaintext
        .get(url.replacen("https://", "http://", 1))
        .send()
        .await;
    assert!(
        r.as_ref().map_or(true, |r| !r.status().is_success()),
        "plaintext HTTP got an answer: {:?}",
        r.map(|r| r.status())
    );
}
