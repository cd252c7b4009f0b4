//! Portcullis on a free loopback port in front of a [`FakeIdp`], with the gateway's logs
//! captured so a test can read why a given request was refused (by its `X-Request-Id`).

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

use portcullis::{AppState, config::Config, crypto::keyring::KeyRing};
use serde_json::Value;
use testkit::browser::{Browser, Response};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use url::Url;

use super::provider::{CLIENT_ID, FakeIdp};

pub const SESSION_COOKIE: &str = "__Host-SessionID";
pub const BINDING_COOKIE: &str = "__Host-Portcullis-Login";

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn logs() -> std::sync::MutexGuard<'static, Vec<u8>> {
    LOGS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy)]
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("portcullis=debug"))
            .json()
            .with_writer(|| LogSink)
            .try_init();
    });
}

/// Every warning or error the gateway logged while handling `resp`'s request, as
/// `message: field=value …` lines.
pub fn logged_problems(resp: &Response) -> String {
    let Some(id) = resp.header("x-request-id") else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&logs()).into_owned();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["span"]["id"] == id && matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
        .map(|e| {
            let fields = e["fields"].as_object().cloned().unwrap_or_default();
            fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_temp(name: &str, value: &str) -> String {
    let dir = std::env::temp_dir().join(format!("portcullis-idtoken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let suffix = portcullis::crypto::random::token::<6>().expect("rng");
    let path = dir.join(format!("{name}-{suffix}"));
    std::fs::write(&path, value).expect("write temp file");
    path.display().to_string()
}

#[derive(Debug)]
pub struct Gateway {
    /// `http://localhost:PORT` (the provider is at 127.0.0.1: another site, as in production).
    pub base: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// What the gateway put into the authorization request it redirected the browser to.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub code_challenge: String,
    pub redirect_uri: String,
}

impl AuthorizationRequest {
    pub fn param(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl Gateway {
    /// Starts the gateway for `idp`, authenticating to it with `client_secret`, and loads the
    /// provider's metadata and keys before returning.
    pub async fn start(idp: &FakeIdp, client_secret: &str) -> Gateway {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let port = listener.local_addr().expect("addr").port();
        let base = format!("http://localhost:{port}");
        let keys = write_temp("keys", &KeyRing::generate_encoded().expect("rng"));
        let secret = write_temp("secret", client_secret);
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"

[session]
keys_file = "{keys}"

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email"]
session_claims = ["sub", "name", "email"]
http_timeout = "3s"
"#,
            issuer = idp.issuer(),
        );
        let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config: {e}"));
        let state = AppState::new(config).expect("state");
        state
            .oidc
            .discover()
            .await
            .expect("discovery against the fake IdP");
        let (tx, rx) = oneshot::channel();
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            portcullis::server::run(listener, server_state, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway server");
        });
        Gateway {
            base,
            state,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /bff/login?returnTo=…`: must redirect to the provider; the authorization request is
    /// read from the `Location`, not requested.
    pub async fn start_login(&self, browser: &Browser, return_to: &str) -> AuthorizationRequest {
        let resp = browser
            .get(&self.url(&format!("/bff/login?returnTo={return_to}")))
            .await
            .expect("GET /bff/login");
        assert_eq!(resp.status.as_u16(), 302, "login: {}", resp.text());
        let url = resp.location_url().expect("login redirects");
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("authorization request has no {name}: {url}"))
        };
        AuthorizationRequest {
            state: param("state"),
            nonce: param("nonce"),
            code_challenge: param("code_challenge"),
            redirect_uri: param("redirect_uri"),
            url,
        }
    }

    /// The provider's redirect back, a cross-site navigation from `idp`:
    /// `GET /bff/callback?code=…&state=…`.
    pub async fn callback(
        &self,
        browser: &Browser,
        idp: &FakeIdp,
        code: &str,
        state: &str,
    ) -> Response {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", code)
            .append_pair("state", state)
            .finish();
        browser
            .request_from(
                idp.issuer(),
                http::Method::GET,
                &self.url(&format!("/bff/callback?{query}")),
                &[],
                bytes::Bytes::new(),
            )
            .await
            .expect("GET /bff/callback")
    }
}
