//! The whole stack on loopback for integration tests: the real OpenID Provider (oidc-provider on
//! Node), a recording upstream, and Portcullis itself served on a free port, plus a log capture
//! so tests can assert that no secret is ever logged.
#![allow(dead_code)]

pub mod leak;
pub mod raw_http;
pub mod running;

use std::time::Duration;

use portcullis::{
    AppState,
    crypto::keyring::KeyRing,
    session::{Session, ticket::Ticket},
};
use running::{BoundPort, RunningGateway, write_secret};
use testkit::{browser::Browser, idp::Idp, idp::IdpOptions, upstream::RecordingUpstream};

pub const COOKIE: &str = "__Host-SessionID";

pub struct Options {
    pub access_token_ttl: u64,
    pub refresh_skew: &'static str,
    /// Extra TOML appended to the config (more routes, ...).
    pub extra_toml: String,
    /// Extra keys for the `[oidc]` table.
    pub extra_oidc: String,
    pub max_request_body: &'static str,
    /// Extra keys for the `[server]` table (trusted proxies, ...).
    pub server_extra: String,
    /// Extra keys for the `[session]` table (store selection).
    pub session_extra: String,
    /// How many gateway instances share the provider, the upstream and the store config.
    pub instances: usize,
    /// Register the first instance's back-channel logout endpoint at the provider (which then
    /// also puts `sid` in ID tokens).
    pub backchannel_logout: bool,
    /// Allow `grant_type=password` for the client at the provider (Portcullis's own switch is
    /// `password_grant = true` in `extra_oidc`).
    pub idp_password_grant: bool,
    /// The provider's own refresh-token policy (`offline_access` granted only with
    /// `prompt=consent`), instead of the fixture's "always".
    pub idp_stock_refresh_policy: bool,
    /// Last changes to the provider's options: another provider's behaviour (client
    /// authentication, signing algorithm, issuer path, missing endpoints, ...).
    pub idp_variant: fn(&mut IdpOptions),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_token_ttl: 3600,
            refresh_skew: "30s",
            extra_toml: String::new(),
            extra_oidc: String::new(),
            max_request_body: "64KiB",
            session_extra: String::new(),
            server_extra: String::new(),
            instances: 1,
            backchannel_logout: false,
            idp_password_grant: false,
            idp_stock_refresh_policy: false,
            idp_variant: |_| {},
        }
    }
}

pub struct Stack {
    pub idp: Idp,
    pub upstream: RecordingUpstream,
    /// The first instance's `http://localhost:PORT`: a different site from the IdP at
    /// 127.0.0.1, as in production.
    pub base: String,
    /// Every instance, the first one included.
    pub instances: Vec<RunningGateway>,
    configs: Vec<String>,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Stack {
        running::init_logs("trace,hyper=info,h2=info,reqwest=debug");
        let mut ports = Vec::new();
        for _ in 0..opts.instances.max(1) {
            ports.push(BoundPort::bind().await);
        }
        let mut idp_opts = IdpOptions::new(format!("{}/bff/callback", ports[0].base));
        idp_opts.redirect_uris = ports
            .iter()
            .map(|p| format!("{}/bff/callback", p.base))
            .collect();
        idp_opts.post_logout_redirect_uris = ports.iter().map(|p| format!("{}/", p.base)).collect();
        idp_opts.access_token_ttl_secs = opts.access_token_ttl;
        if opts.backchannel_logout {
            idp_opts.backchannel_logout_uri =
                Some(format!("{}/bff/backchannel-logout", ports[0].base));
        }
        idp_opts.password_grant = opts.idp_password_grant;
        idp_opts.stock_refresh_policy = opts.idp_stock_refresh_policy;
        (opts.idp_variant)(&mut idp_opts);
        let idp = Idp::start(idp_opts)
            .await
            .expect("start the OpenID Provider");
        let upstream = RecordingUpstream::start().await;
        // One key ring for all instances: any of them opens any session.
        let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
        let secret = write_secret("secret", idp.client_secret());
        let mut instances = Vec::new();
        let mut configs = Vec::new();
        for bound in ports {
            let toml = config_toml(
                &opts,
                bound.port,
                &bound.base,
                &keys,
                &secret,
                &idp,
                &upstream,
            );
            instances.push(bound.serve(&toml).await);
            configs.push(toml);
        }
        Stack {
            base: instances[0].base.clone(),
            idp,
            upstream,
            instances,
            configs,
        }
    }

    /// The TOML instance `i` runs with (e.g. for the CLI against the same store).
    pub fn config_of(&self, i: usize) -> &str {
        &self.configs[i]
    }

    /// The first instance's state.
    pub fn state(&self) -> &AppState {
        &self.instances[0].state
    }

    /// Stops instance `i` completely and starts it again, same port and config (a process
    /// restart: nothing in memory survives).
    pub async fn restart(&mut self, i: usize) {
        let old = self.instances.remove(i);
        let port = old.port();
        old.stop().await;
        let bound = BoundPort::bind_port(port).await;
        self.instances
            .insert(i, bound.serve(&self.configs[i]).await);
    }

    /// `path` on instance `i`.
    pub fn url_on(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.instances[i].base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Goes through `GET /bff/login?returnTo=/home` and the provider's real login form, whatever
    /// the callback then answers.
    pub async fn login_attempt(&self, browser: &Browser) -> testkit::browser::LoginOutcome {
        browser
            .login_via_form(
                &self.url("/bff/login?returnTo=/home"),
                self.idp.username(),
                self.idp.password(),
            )
            .await
            .expect("login through the provider's form")
    }

    /// Logs `browser` in through the provider's real login form; returns the session cookie.
    pub async fn login(&self, browser: &Browser) -> String {
        let outcome = self.login_attempt(browser).await;
        assert_eq!(
            outcome.callback_response.status.as_u16(),
            302,
            "callback: {}",
            outcome.callback_response.text()
        );
        browser.cookie(COOKIE).expect("session cookie set")
    }

    /// `GET /bff/session`: its status, and its JSON body (`Null` when it has none).
    pub async fn session_info(&self, browser: &Browser) -> (u16, serde_json::Value) {
        let r = browser
            .get(&self.url("/bff/session"))
            .await
            .expect("session");
        (
            r.status.as_u16(),
            r.json().unwrap_or(serde_json::Value::Null),
        )
    }

    /// The CSRF token from `GET /bff/session`.
    pub async fn csrf(&self, browser: &Browser) -> String {
        let (status, body) = self.session_info(browser).await;
        assert_eq!(status, 200, "{body}");
        body["csrfToken"].as_str().expect("csrfToken").to_owned()
    }

    /// The server-side record behind a cookie (tests only: opening needs the cookie's ticket).
    pub async fn session_record(&self, cookie: &str) -> Option<Session> {
        self.state()
            .sessions
            .load(Ticket::parse(cookie).expect("ticket"))
            .await
            .expect("store")
    }
}

fn config_toml(
    opts: &Options,
    port: u16,
    base: &str,
    keys: &str,
    secret: &str,
    idp: &Idp,
    upstream: &RecordingUpstream,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"
max_request_body = "{max_body}"
{server_extra}

[session]
keys_file = "{keys}"
{session_extra}

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email", "offline_access"]
session_claims = ["sub", "name", "email"]
refresh_skew = "{skew}"
{extra_oidc}

[[routes]]
prefix = "/api/orders"
upstream = "{up}/orders"
timeout = "2s"

[[routes]]
prefix = "/api"
upstream = "{up}"
timeout = "2s"

[[routes]]
prefix = "/dead"
upstream = "http://127.0.0.1:9"
timeout = "2s"
connect_timeout = "1s"
{extra}
"#,
        max_body = opts.max_request_body,
        session_extra = opts.session_extra,
        server_extra = opts.server_extra,
        issuer = idp.issuer(),
        client_id = idp.client_id(),
        skew = opts.refresh_skew,
        extra_oidc = opts.extra_oidc,
        up = upstream.url(),
        extra = opts.extra_toml,
    )
}

/// Polls `cond` for up to 10 s (for effects that happen after a response, e.g. a revocation).
pub async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sends one raw HTTP/1.1 request (exact bytes: no client-side path normalisation) and returns
/// the status code.
pub async fn raw_status(base: &str, request_line_target: &str, extra_headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://");
    let port = authority.rsplit(':').next().expect("port");
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let req = format!(
        "GET {request_line_target} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
