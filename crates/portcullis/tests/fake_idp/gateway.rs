//! Portcullis on a free loopback port in front of a [`FakeIdp`], with the gateway's logs
//! captured so a test can read why a given request was refused (by its `X-Request-Id`).

use portcullis::{AppState, crypto::keyring::KeyRing};
use serde_json::Value;
use testkit::browser::{Browser, Response};
use url::Url;

use super::provider::{CLIENT_ID, FakeIdp, Grant};
use crate::common::running::{self, BoundPort, RunningGateway, captured_logs, write_secret};

pub const SESSION_COOKIE: &str = "__Host-SessionID";
pub const BINDING_COOKIE: &str = "__Host-Portcullis-Login";

/// Every warning or error the gateway logged while handling `resp`'s request, as
/// `message: field=value …` lines.
pub fn logged_problems(resp: &Response) -> String {
    let Some(id) = resp.header("x-request-id") else {
        return String::new();
    };
    let text = captured_logs();
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

#[derive(Debug)]
pub struct Gateway {
    /// `http://localhost:PORT` (the provider is at 127.0.0.1: another site, as in production).
    pub base: String,
    pub state: AppState,
    _running: RunningGateway,
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
    /// The grant a provider would remember for a code issued to this request.
    pub fn grant(&self) -> Grant {
        Grant {
            code_challenge: self.code_challenge.clone(),
            nonce: self.nonce.clone(),
            redirect_uri: self.redirect_uri.clone(),
        }
    }

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
        Self::start_with(idp, client_secret, "").await
    }

    /// Like [`start`](Self::start), with `extra` appended to the configuration: more `[oidc]`
    /// keys first (the file ends inside `[oidc]`), then any further tables (routes, ...).
    pub async fn start_with(idp: &FakeIdp, client_secret: &str, extra: &str) -> Gateway {
        Self::start_full(idp, client_secret, extra, None).await
    }

    /// [`start`](Self::start) with `store` as the session store.
    pub async fn start_with_store(
        idp: &FakeIdp,
        client_secret: &str,
        store: std::sync::Arc<dyn portcullis::store::SessionStore>,
    ) -> Gateway {
        Self::start_full(idp, client_secret, "", Some(store)).await
    }

    async fn start_full(
        idp: &FakeIdp,
        client_secret: &str,
        extra: &str,
        store: Option<std::sync::Arc<dyn portcullis::store::SessionStore>>,
    ) -> Gateway {
        running::init_logs("portcullis=debug");
        let bound = BoundPort::bind().await;
        let (port, base) = (bound.port, bound.base.clone());
        let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
        let secret = write_secret("secret", client_secret);
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
{extra}
"#,
            issuer = idp.issuer(),
        );
        let running = match store {
            Some(store) => bound.serve_with_store(&toml, store).await,
            None => bound.serve(&toml).await,
        };
        Gateway {
            base,
            state: running.state.clone(),
            _running: running,
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
