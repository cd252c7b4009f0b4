//! [`Idp`]: the OpenID Provider fixture (`crates/testkit/idp/server.mjs`,
//! oidc-provider 9.13.3 on Node.js) as a real child process on 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use testkit::idp::{Idp, IdpOptions};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let idp = Idp::start(IdpOptions::new(format!("http://127.0.0.1:{port}/bff/callback"))).await?;
//! println!("issuer: {}", idp.issuer());
//! assert_eq!(idp.stats().await?.refresh_grants(), 0);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::OnceCell;

/// How long one attempt of [`Idp::start`] waits for the `IDP_READY` line (about 0.5 s on an
/// idle machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times [`Idp::start`] spawns the fixture before it gives up. Rarely (a few in a
/// hundred starts, four at a time on a 2-core machine) a `node server.mjs` prints nothing after
/// loading oidc-provider and never gets to listen; a fresh process then starts normally.
const START_ATTEMPTS: u32 = 3;

const NOT_READY: &str = "no IDP_READY line within";

/// The default test user.
pub const DEFAULT_USERNAME: &str = "alice";
/// The default test user's password.
pub const DEFAULT_PASSWORD: &str = "wonderland";
/// The default client id.
pub const DEFAULT_CLIENT_ID: &str = "portcullis";
/// The default client secret.
pub const DEFAULT_CLIENT_SECRET: &str = "portcullis-secret";

const STDERR_TAIL_LINES: usize = 200;

/// Options for [`Idp::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpOptions {
    /// Redirect URIs registered for the client (at least one; no commas).
    pub redirect_uris: Vec<String>,
    /// `post_logout_redirect_uris` registered for the client.
    pub post_logout_redirect_uris: Vec<String>,
    /// Access token lifetime (`expires_in`) in seconds (default 3600).
    pub access_token_ttl_secs: u64,
    /// Client id (default `portcullis`).
    pub client_id: String,
    /// Client secret, `client_secret_basic` (default `portcullis-secret`).
    pub client_secret: String,
    /// `backchannel_logout_uri` of the client; when set, the client also
    /// registers `backchannel_logout_session_required` and ID tokens carry
    /// `sid`.
    pub backchannel_logout_uri: Option<String>,
    /// The test user's login name, also its `sub` (default `alice`).
    pub username: String,
    /// The test user's password (default `wonderland`).
    pub password: String,
    /// A fixed port; `None` (the default) lets the OS choose a free one.
    pub port: Option<u16>,
    /// Enables `grant_type=password` (RFC 6749 4.3, deprecated by RFC 9700)
    /// for the client: the test user's credentials at the token endpoint get
    /// the same tokens as the code flow. Off by default.
    pub password_grant: bool,
    /// oidc-provider's own refresh-token policy instead of the fixture's "always": a refresh
    /// token only when `offline_access` was granted, which oidc-provider grants only to an
    /// authorization request with `prompt=consent` (OIDC Core §11). As a provider nobody tuned.
    pub stock_refresh_policy: bool,
    /// The client's registered `token_endpoint_auth_method` (`None`: `client_secret_basic`);
    /// oidc-provider refuses any other method for it.
    pub token_endpoint_auth_method: Option<String>,
    /// The methods the provider offers (discovery `token_endpoint_auth_methods_supported`);
    /// empty: oidc-provider's default list (`client_secret_basic`, `client_secret_post`, …).
    pub client_auth_methods: Vec<String>,
    /// The ID token signing algorithm (`None`: RS256), with a fresh key of the matching type:
    /// `RS256`…`PS512`, `ES256`/`ES384`/`ES512`, `EdDSA` or `Ed25519` (both Ed25519 keys).
    pub id_token_alg: Option<String>,
    /// An issuer with a path (`/realms/test`, no trailing slash): every endpoint, the test ones
    /// included, is served under it (like Keycloak's realms).
    pub issuer_path: Option<String>,
    /// Publishes three more keys after the signing key (an RSA key without `alg`, an ES256 and
    /// an ES512 key), each with its own `kid`, never used to sign.
    pub extra_keys: bool,
    /// Publishes the signing key without `alg` (its `kid` and `use` stay).
    pub key_without_alg: bool,
    /// RFC 7009 revocation (default on); off, discovery has no `revocation_endpoint`.
    pub revocation: bool,
    /// RP-Initiated Logout (default on); off, discovery has no `end_session_endpoint`.
    pub end_session: bool,
    /// The scope's claims (`name`, `email`) only in the UserInfo answer, not in the ID token
    /// (oidc-provider's own default, OIDC Core §5.4); default off.
    pub claims_only_in_userinfo: bool,
}

impl Default for IdpOptions {
    fn default() -> Self {
        Self {
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            access_token_ttl_secs: 3600,
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            backchannel_logout_uri: None,
            username: DEFAULT_USERNAME.to_owned(),
            password: DEFAULT_PASSWORD.to_owned(),
            port: None,
            password_grant: false,
            stock_refresh_policy: false,
            token_endpoint_auth_method: None,
            client_auth_methods: Vec::new(),
            id_token_alg: None,
            issuer_path: None,
            extra_keys: false,
            key_without_alg: false,
            revocation: true,
            end_session: true,
            claims_only_in_userinfo: false,
        }
    }
}

impl IdpOptions {
    /// Defaults with one redirect URI.
    pub fn new(redirect_uri: impl Into<String>) -> Self {
        Self {
            redirect_uris: vec![redirect_uri.into()],
            ..Self::default()
        }
    }
}

/// The counters of `GET /_test/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Token endpoint requests by `grant_type` (successful or not;
    /// `unknown` when the request had none).
    pub token_requests: BTreeMap<String, u64>,
    /// Token endpoint error responses by OAuth error code.
    pub token_errors: BTreeMap<String, u64>,
    /// `invalid_grant` answers to `grant_type=refresh_token`.
    pub refresh_invalid_grant: u64,
    /// Successful (200) requests to the revocation endpoint.
    pub revocations: u64,
    /// Revocation requests that found (and revoked) a refresh token.
    pub revoked_refresh_tokens: u64,
    /// Revocation requests that found (and revoked) an access token.
    pub revoked_access_tokens: u64,
    /// Grants revoked for any reason (revocation of a refresh token, reuse
    /// of a rotated refresh token, RP-initiated logout).
    pub grants_revoked: u64,
    /// Requests to the introspection endpoint.
    pub introspections: u64,
    /// Requests to the userinfo endpoint.
    pub userinfo_requests: u64,
    /// Requests to the authorization endpoint (not counting the resumes
    /// after an interaction).
    pub authorization_requests: u64,
    /// Completed RP-initiated logouts (end_session confirmed).
    pub end_sessions: u64,
    /// Back-channel logout tokens delivered (2xx from the RP).
    pub backchannel_logouts: u64,
    /// Back-channel logout deliveries that failed.
    pub backchannel_logout_errors: u64,
    /// Successful login form submissions.
    pub logins: u64,
    /// Rejected login form submissions.
    pub failed_logins: u64,
    /// Successful `grant_type=password` requests (tokens issued).
    pub password_grants: u64,
    /// `grant_type=password` requests refused for wrong credentials (unknown
    /// user or wrong password: the same `invalid_grant`).
    pub failed_password_grants: u64,
    /// Requests to the provider's endpoints that carried a W3C `traceparent` (the last 200).
    pub traceparents: Vec<TraceparentSeen>,
}

/// One request to the provider that carried a `traceparent` header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TraceparentSeen {
    pub method: String,
    /// The path without the query, e.g. `/token`.
    pub path: String,
    pub traceparent: String,
}

impl Stats {
    /// Token requests with `grant_type=authorization_code`.
    pub fn code_grants(&self) -> u64 {
        self.token_requests
            .get("authorization_code")
            .copied()
            .unwrap_or(0)
    }

    /// Token requests with `grant_type=refresh_token`.
    pub fn refresh_grants(&self) -> u64 {
        self.token_requests
            .get("refresh_token")
            .copied()
            .unwrap_or(0)
    }

    /// Token requests with `grant_type=password` (successful or not).
    pub fn password_grant_requests(&self) -> u64 {
        self.token_requests.get("password").copied().unwrap_or(0)
    }

    /// Token endpoint requests of any grant type.
    pub fn all_token_requests(&self) -> u64 {
        self.token_requests.values().sum()
    }
}

/// The IdP child process. Killed when dropped (and it exits by itself when
/// the test process dies: its stdin is a pipe held by this struct).
#[derive(Debug)]
pub struct Idp {
    child: Child,
    // Keeps the child's stdin open; the fixture exits when it closes.
    _stdin: Option<ChildStdin>,
    issuer: String,
    options: IdpOptions,
    http: reqwest::Client,
    stderr_tail: crate::log_tail::LogTail,
}

/// The directory of the Node.js fixture (`crates/testkit/idp`).
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("idp")
}

impl Idp {
    /// Installs the fixture's npm dependencies if needed (`npm ci`, once per
    /// machine, under a file lock), spawns `node server.mjs` and waits (up to
    /// [`READY_TIMEOUT`]) for its `IDP_READY <issuer>` line; a process that does not get ready
    /// is killed and another one started (up to three in all).
    ///
    /// The Node.js binary is `node` from `PATH`, or `$TESTKIT_NODE`.
    pub async fn start(options: IdpOptions) -> anyhow::Result<Idp> {
        let mut attempt = 1;
        loop {
            match Self::start_once(options.clone()).await {
                Err(e) if attempt < START_ATTEMPTS && e.to_string().contains(NOT_READY) => {
                    eprintln!("[idp] attempt {attempt} did not become ready; starting it again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// One attempt of [`start`](Self::start): the process is killed if it does not get ready.
    async fn start_once(options: IdpOptions) -> anyhow::Result<Idp> {
        if options.redirect_uris.is_empty() {
            bail!("IdpOptions::redirect_uris must name at least one redirect URI");
        }
        for uri in options
            .redirect_uris
            .iter()
            .chain(&options.post_logout_redirect_uris)
        {
            if uri.contains(',') || uri.trim() != uri || uri.is_empty() {
                bail!(
                    "redirect URI {uri:?} must be non-empty, without commas or surrounding spaces"
                );
            }
        }
        if options.access_token_ttl_secs == 0 {
            bail!("access_token_ttl_secs must be positive");
        }
        let dir = idp_dir();
        ensure_node_modules(&dir).await?;

        let node = std::env::var("TESTKIT_NODE").unwrap_or_else(|_| "node".to_owned());
        let mut cmd = Command::new(&node);
        cmd.arg("server.mjs")
            .current_dir(&dir)
            .env("IDP_REDIRECT_URIS", options.redirect_uris.join(","))
            .env(
                "IDP_POST_LOGOUT_REDIRECT_URIS",
                options.post_logout_redirect_uris.join(","),
            )
            .env(
                "IDP_ACCESS_TOKEN_TTL",
                options.access_token_ttl_secs.to_string(),
            )
            .env("IDP_CLIENT_ID", &options.client_id)
            .env("IDP_CLIENT_SECRET", &options.client_secret)
            .env("IDP_USER", &options.username)
            .env("IDP_PASSWORD", &options.password)
            .env("IDP_EXIT_ON_STDIN_CLOSE", "1")
            .env(
                "IDP_PASSWORD_GRANT",
                if options.password_grant { "1" } else { "0" },
            )
            .env(
                "IDP_STOCK_REFRESH_POLICY",
                if options.stock_refresh_policy {
                    "1"
                } else {
                    "0"
                },
            )
            .env(
                "IDP_TOKEN_ENDPOINT_AUTH_METHOD",
                options
                    .token_endpoint_auth_method
                    .as_deref()
                    .unwrap_or("client_secret_basic"),
            )
            .env(
                "IDP_CLIENT_AUTH_METHODS",
                options.client_auth_methods.join(","),
            )
            .env(
                "IDP_ID_TOKEN_ALG",
                options.id_token_alg.as_deref().unwrap_or("RS256"),
            )
            .env(
                "IDP_ISSUER_PATH",
                options.issuer_path.as_deref().unwrap_or(""),
            )
            .env("IDP_EXTRA_KEYS", flag(options.extra_keys))
            .env("IDP_KEY_WITHOUT_ALG", flag(options.key_without_alg))
            .env("IDP_NO_REVOCATION", flag(!options.revocation))
            .env("IDP_NO_END_SESSION", flag(!options.end_session))
            .env(
                "IDP_CLAIMS_ONLY_IN_USERINFO",
                flag(options.claims_only_in_userinfo),
            )
            .env_remove("IDP_USER_NAME")
            .env_remove("IDP_USER_EMAIL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &options.backchannel_logout_uri {
            Some(uri) => cmd.env("IDP_BACKCHANNEL_LOGOUT_URI", uri),
            None => cmd.env_remove("IDP_BACKCHANNEL_LOGOUT_URI"),
        };
        match options.port {
            Some(p) => cmd.env("IDP_PORT", p.to_string()),
            None => cmd.env_remove("IDP_PORT"),
        };
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "spawning `{node} server.mjs` in {} (is Node.js >= 20 installed?)",
                dir.display()
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout not piped")?;
        let stderr = child.stderr.take().context("child stderr not piped")?;

        let stderr_tail = crate::log_tail::LogTail::new(STDERR_TAIL_LINES);
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[idp] {line}");
                tail.push(line);
            }
        });

        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => {
                            if let Some(issuer) = line.strip_prefix("IDP_READY ") {
                                return Ok(issuer.trim().to_owned());
                            }
                            eprintln!("[idp] {line}");
                        }
                        Ok(None) => {
                            let status = child.wait().await;
                            return Err(format!("the IdP closed its stdout before IDP_READY (exit: {status:?})"));
                        }
                        Err(e) => return Err(format!("reading the IdP's stdout: {e}")),
                    },
                    status = child.wait() => {
                        return Err(format!("the IdP exited before IDP_READY ({status:?})"));
                    }
                }
            }
        })
        .await;

        let issuer = match ready {
            Ok(Ok(issuer)) => issuer,
            other => {
                let why = match other {
                    Ok(Err(e)) => e,
                    _ => format!("{NOT_READY} {READY_TIMEOUT:?}"),
                };
                let _ = child.start_kill();
                // Let the stderr forwarder catch the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let tail: Vec<String> = stderr_tail.lines();
                bail!(
                    "starting the IdP fixture failed: {why}\n--- IdP stderr (tail) ---\n{}",
                    tail.join("\n")
                );
            }
        };

        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[idp] {line}");
            }
        });

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the reqwest client")?;

        Ok(Idp {
            child,
            _stdin: stdin,
            issuer,
            options,
            http,
            stderr_tail,
        })
    }

    /// The issuer, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The port the IdP listens on.
    pub fn port(&self) -> u16 {
        url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or(0)
    }

    /// The options the IdP was started with.
    pub fn options(&self) -> &IdpOptions {
        &self.options
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.options.client_id
    }

    /// The client secret.
    pub fn client_secret(&self) -> &str {
        &self.options.client_secret
    }

    /// The test user's login name (and `sub`).
    pub fn username(&self) -> &str {
        &self.options.username
    }

    /// The test user's password.
    pub fn password(&self) -> &str {
        &self.options.password
    }

    /// The child's process id (`None` once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines the IdP wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lines()
    }

    /// The discovery document.
    pub async fn discovery(&self) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .get(self.discovery_url())
            .send()
            .await
            .context("GET discovery")?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// `GET /_test/stats`.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let resp = self
            .http
            .get(format!("{}/_test/stats", self.issuer))
            .send()
            .await
            .context("GET /_test/stats")?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// `POST /_test/reset-stats`.
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_test/reset-stats", self.issuer))
            .send()
            .await
            .context("POST /_test/reset-stats")?
            .error_for_status()?;
        Ok(())
    }

    /// Makes the IdP deliver back-channel logout tokens to the client's
    /// `backchannel_logout_uri` (`POST /_test/backchannel-logout`), as it would
    /// when the user's session ends at the IdP: for `sid`, or for every `sid`
    /// issued so far to `sub` (default: the test user). Returns the IdP's
    /// JSON report (`{"sub", "results": [{"sid", "delivered", "error"?}]}`);
    /// fails unless every delivery got a 200/204.
    pub async fn backchannel_logout(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut form: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = sub {
            form.push(("sub", s));
        }
        if let Some(s) = sid {
            form.push(("sid", s));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let resp = self
            .http
            .post(format!("{}/_test/backchannel-logout", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .context("POST /_test/backchannel-logout")?;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("back-channel logout failed ({status}): {json}");
        }
        Ok(json)
    }

    /// `POST /_test/rotate-keys`: a new signing key (same algorithm, new `kid`) signs every ID
    /// and logout token from now on; the old key stays in the JWKS unless `retire`. Returns the
    /// new key set.
    pub async fn rotate_keys(&self, retire: bool) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}/_test/rotate-keys", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(if retire { "retire=1" } else { "retire=0" })
            .send()
            .await
            .context("POST /_test/rotate-keys")?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Kills the IdP and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing the IdP")?;
        Ok(())
    }
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

static NODE_MODULES: OnceCell<()> = OnceCell::const_new();

fn node_modules_installed(dir: &Path) -> anyhow::Result<bool> {
    Ok(dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
        && dir.join("node_modules/.package-lock.json").is_file())
}

/// `npm ci` in `dir` unless oidc-provider is installed (see [`crate::npm`]).
async fn ensure_node_modules(dir: &Path) -> anyhow::Result<()> {
    static MODULES: crate::npm::Modules = crate::npm::Modules {
        label: "[idp]",
        what: "node_modules/oidc-provider",
        installed: node_modules_installed,
    };
    crate::npm::ensure(&NODE_MODULES, dir, &MODULES).await
}
