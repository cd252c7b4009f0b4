//! The real `portcullis` binary as a child process on loopback, with the real OpenID Provider:
//! shared by the signal tests (`lifecycle.rs`) and the OTLP export test (`tracing.rs`).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use portcullis::crypto::keyring::KeyRing;
use testkit::{
    browser::Browser,
    idp::{Idp, IdpOptions},
};

pub const COOKIE: &str = "__Host-SessionID";

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-lifecycle-{}-{}",
        std::process::id(),
        portcullis::crypto::random::token::<6>().expect("rng")
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The binary as a child process; killed when dropped (even when the test fails).
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub admin_token: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Setup {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub admin_token: String,
    pub secret: PathBuf,
    pub idp: Idp,
}

impl Setup {
    pub async fn new() -> Setup {
        let dir = temp_dir();
        let port = free_port();
        let idp = Idp::start(IdpOptions::new(format!(
            "http://localhost:{port}/bff/callback"
        )))
        .await
        .expect("start the OpenID Provider");
        let secret = dir.join("client-secret");
        std::fs::write(&secret, idp.client_secret()).expect("write");
        let admin_token = KeyRing::generate_encoded().expect("rng");
        std::fs::write(dir.join("admin-token"), &admin_token).expect("write");
        Setup {
            admin_port: free_port(),
            dir,
            port,
            admin_token,
            secret,
            idp,
        }
    }

    /// A config file body: `keys_file`, the server extras and the routes vary per test step.
    pub fn toml(&self, keys_file: &Path, server_extra: &str, routes: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://localhost:{port}"
{server_extra}

[session]
keys_file = "{keys}"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_file = "{secret}"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "{token}"

[logging]
format = "json"
{routes}
"#,
            port = self.port,
            admin_port = self.admin_port,
            keys = keys_file.display(),
            issuer = self.idp.issuer(),
            client_id = self.idp.client_id(),
            secret = self.secret.display(),
            token = self.dir.join("admin-token").display(),
        )
    }

    pub fn keys(&self, name: &str, ring: &[&str]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, ring.join(",")).expect("write keys");
        p
    }

    pub async fn start(&self, toml: &str) -> Gateway {
        let config = self.dir.join("portcullis.toml");
        std::fs::write(&config, toml).expect("write config");
        let log = self.dir.join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn portcullis");
        let gw = Gateway {
            child,
            port: self.port,
            admin_port: self.admin_port,
            admin_token: self.admin_token.clone(),
            config,
            log,
        };
        let http = Browser::new();
        let ready = eventually(|| async {
            http.get(&gw.url("/readyz"))
                .await
                .is_ok_and(|r| r.status.as_u16() == 200)
        })
        .await;
        assert!(ready, "gateway never became ready: {}", gw.logs());
        gw
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig}");
    }

    pub fn rewrite(&self, toml: &str) {
        std::fs::write(&self.config, toml).expect("rewrite config");
    }

    pub async fn admin_readyz(&self) -> Option<u16> {
        Browser::new()
            .get_with(
                &self.admin("/readyz"),
                &[("authorization", &format!("Bearer {}", self.admin_token))],
            )
            .await
            .ok()
            .map(|r| r.status.as_u16())
    }
}

/// Polls `cond` for up to 30 s (effects of a signal, which has no reply to wait for).
pub async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub async fn login(gw: &Gateway, idp: &Idp) -> Browser {
    let browser = Browser::new();
    let outcome = browser
        .login_via_form(
            &gw.url("/bff/login?returnTo=/"),
            idp.username(),
            idp.password(),
        )
        .await
        .expect("login through the provider's form");
    assert_eq!(
        outcome.callback_response.status.as_u16(),
        302,
        "{}",
        outcome.callback_response.text()
    );
    assert!(browser.cookie(COOKIE).is_some());
    browser
}

pub async fn status(browser: &Browser, url: &str) -> u16 {
    browser.get(url).await.expect("request").status.as_u16()
}

pub fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}
