//! An in-process OpenID Provider on 127.0.0.1 whose token endpoint answers whatever the test
//! scripts. It serves discovery, a swappable JWKS and a token endpoint that, like a real
//! provider, insists on `client_secret_basic` and on the PKCE verifier matching the S256
//! challenge of the authorization request. The authorization endpoint is only advertised: tests
//! read the authorization request from the gateway's redirect and register the grant directly.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const CLIENT_ID: &str = "portcullis-test";
pub const CLIENT_SECRET: &str = "s3cr3t:with/odd&chars+";

/// What the authorization endpoint would have remembered about a code it issued.
#[derive(Debug, Clone)]
pub struct Grant {
    pub code_challenge: String,
    pub nonce: String,
    pub redirect_uri: String,
}

/// The token endpoint's answer once client and grant check out.
#[derive(Debug, Clone)]
pub enum TokenReply {
    IdToken(String),
    NoIdToken,
    /// 400 with an OAuth error body.
    OAuthError(&'static str),
    /// Any status with a raw body of the given content type.
    Raw(StatusCode, &'static str, &'static str),
    /// 200: the usual token response with these members replaced (`null` removes one).
    Fields(Value),
}

pub type Script = Box<dyn Fn(&Grant) -> TokenReply + Send + Sync>;

/// How the token endpoint answers `grant_type=refresh_token` for [`REFRESH_TOKEN`].
pub type RefreshScript = Box<dyn Fn() -> TokenReply + Send + Sync>;

/// The refresh token every successful code exchange hands out.
pub const REFRESH_TOKEN: &str = "rt-opaque-1";
/// The access token a successful refresh hands out.
pub const REFRESHED_ACCESS_TOKEN: &str = "at-opaque-2";

/// What the token endpoint saw in one request.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub basic_auth: Option<(String, String)>,
    pub form: HashMap<String, String>,
    /// The answer's status.
    pub status: u16,
}

#[derive(Debug, Clone, Default)]
pub struct IdpOptions {
    /// Advertise a token endpoint nobody listens on.
    pub dead_token_endpoint: bool,
    /// Members of the discovery document replaced (`null` removes one), to play other providers.
    pub discovery_patch: Option<Value>,
    /// The key set's `Content-Type` (default `application/json`), e.g. a static file's.
    pub jwks_content_type: Option<&'static str>,
    /// Advertise `{issuer}/userinfo` (answered as set by [`FakeIdp::set_userinfo`]).
    pub userinfo: bool,
}

/// What the UserInfo endpoint saw in one request.
#[derive(Debug, Clone, Default)]
pub struct UserinfoRequest {
    pub method: String,
    pub authorization: Option<String>,
    pub query: Option<String>,
}

struct Shared {
    issuer: String,
    token_endpoint: String,
    discovery_patch: Option<Value>,
    jwks_content_type: &'static str,
    jwks: Mutex<Vec<Value>>,
    jwks_fetches: AtomicUsize,
    grants: Mutex<HashMap<String, Grant>>,
    script: Mutex<Option<Script>>,
    refresh_script: Mutex<Option<RefreshScript>>,
    /// `expires_in` of issued access tokens (seconds).
    expires_in: std::sync::atomic::AtomicU64,
    token_requests: Mutex<Vec<TokenRequest>>,
    userinfo: bool,
    /// The UserInfo answer to a request with a valid access token: status, content type, body.
    userinfo_reply: Mutex<Option<(StatusCode, &'static str, String)>>,
    userinfo_requests: Mutex<Vec<UserinfoRequest>>,
    /// The UserInfo endpoint accepts requests and never answers.
    userinfo_hangs: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
pub struct FakeIdp {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/token")
}

impl FakeIdp {
    pub async fn start(jwks: Vec<Value>, opts: IdpOptions) -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake IdP");
        let issuer = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let token_endpoint = if opts.dead_token_endpoint {
            dead_url().await
        } else {
            format!("{issuer}/token")
        };
        let shared = Arc::new(Shared {
            issuer,
            token_endpoint,
            discovery_patch: opts.discovery_patch,
            jwks_content_type: opts.jwks_content_type.unwrap_or("application/json"),
            jwks: Mutex::new(jwks),
            jwks_fetches: AtomicUsize::new(0),
            grants: Mutex::default(),
            script: Mutex::default(),
            refresh_script: Mutex::default(),
            expires_in: std::sync::atomic::AtomicU64::new(3600),
            token_requests: Mutex::default(),
            userinfo: opts.userinfo,
            userinfo_reply: Mutex::default(),
            userinfo_requests: Mutex::default(),
            userinfo_hangs: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks_doc))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo).post(userinfo))
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeIdp {
            shared,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Replaces the published key set (key rotation).
    pub fn set_jwks(&self, keys: Vec<Value>) {
        *lock(&self.shared.jwks) = keys;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Issues `code` for an authorization request (as the authorization endpoint would).
    pub fn issue_code(&self, code: &str, grant: Grant) {
        lock(&self.shared.grants).insert(code.to_owned(), grant);
    }

    /// How the token endpoint answers a well-formed request.
    pub fn script(&self, f: impl Fn(&Grant) -> TokenReply + Send + Sync + 'static) {
        *lock(&self.shared.script) = Some(Box::new(f));
    }

    /// How the token endpoint answers a refresh with [`REFRESH_TOKEN`] (unscripted: `invalid_grant`).
    pub fn script_refresh(&self, f: impl Fn() -> TokenReply + Send + Sync + 'static) {
        *lock(&self.shared.refresh_script) = Some(Box::new(f));
    }

    /// `expires_in` of the access tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.shared.expires_in.store(secs, Ordering::SeqCst);
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.token_requests).clone()
    }

    /// How the UserInfo endpoint answers a request bearing an access token this provider issued
    /// (unset: 500). A request without one gets 401 `invalid_token`, as from a real provider.
    pub fn set_userinfo(&self, status: StatusCode, content_type: &'static str, body: String) {
        *lock(&self.shared.userinfo_reply) = Some((status, content_type, body));
    }

    /// From now on the UserInfo endpoint never answers (a provider that hangs).
    pub fn hang_userinfo(&self) {
        self.shared
            .userinfo_hangs
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn userinfo_requests(&self) -> Vec<UserinfoRequest> {
        lock(&self.shared.userinfo_requests).clone()
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let iss = &s.issuer;
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": s.token_endpoint,
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    });
    if s.userinfo {
        doc["userinfo_endpoint"] = Value::from(format!("{iss}/userinfo"));
    }
    for (k, v) in s
        .discovery_patch
        .iter()
        .flat_map(|p| p.as_object().expect("members"))
    {
        if v.is_null() {
            doc.as_object_mut().expect("object").remove(k);
        } else {
            doc[k] = v.clone();
        }
    }
    Json(doc)
}

async fn jwks_doc(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let body = json!({ "keys": *lock(&s.jwks) }).to_string();
    ([(header::CONTENT_TYPE, s.jwks_content_type)], body).into_response()
}

/// OIDC Core §5.3: GET or POST, the access token as a Bearer token (RFC 6750).
async fn userinfo(
    State(s): State<Arc<Shared>>,
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&s.userinfo_requests).push(UserinfoRequest {
        method: method.to_string(),
        authorization: authorization.clone(),
        query: uri.query().map(str::to_owned),
    });
    if s.userinfo_hangs.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let issued = ["at-opaque-1", REFRESHED_ACCESS_TOKEN];
    let bearer_ok = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| issued.contains(&t));
    if !bearer_ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
        )
            .into_response();
    }
    match lock(&s.userinfo_reply).clone() {
        Some((status, content_type, body)) => {
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    let mut resp = (status, Json(json!({ "error": error }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic"),
        );
    }
    resp
}

/// RFC 6749 2.3.1: `client_secret_basic` credentials are form-encoded, then Basic-encoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = STANDARD.decode(value.strip_prefix("Basic ")?).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic_auth = basic_credentials(&headers);
    let resp = answer_token(&s, basic_auth.as_ref(), &form);
    lock(&s.token_requests).push(TokenRequest {
        basic_auth,
        form,
        status: resp.status().as_u16(),
    });
    resp
}

fn answer_token(
    s: &Shared,
    basic: Option<&(String, String)>,
    form: &HashMap<String, String>,
) -> Response {
    let client_ok = basic.is_some_and(|(id, secret)| id == CLIENT_ID && secret == CLIENT_SECRET);
    if !client_ok || form.contains_key("client_secret") {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        return answer_refresh(s, form);
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // Codes are single-use: taken whatever happens next.
    let grant = form.get("code").and_then(|c| lock(&s.grants).remove(c));
    let Some(grant) = grant else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let pkce_ok = form
        .get("code_verifier")
        .is_some_and(|v| s256(v) == grant.code_challenge);
    let redirect_ok = form.get("redirect_uri") == Some(&grant.redirect_uri);
    if !pkce_ok || !redirect_ok {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let reply = match lock(&s.script).as_ref() {
        Some(script) => script(&grant),
        None => TokenReply::OAuthError("server_error"),
    };
    let tokens = json!({
        "access_token": "at-opaque-1",
        "token_type": "Bearer",
        "expires_in": s.expires_in.load(Ordering::SeqCst),
        "refresh_token": REFRESH_TOKEN,
    });
    token_response(tokens, reply)
}

fn answer_refresh(s: &Shared, form: &HashMap<String, String>) -> Response {
    if form.get("refresh_token").map(String::as_str) != Some(REFRESH_TOKEN) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let reply = match lock(&s.refresh_script).as_ref() {
        Some(script) => script(),
        None => TokenReply::OAuthError("invalid_grant"),
    };
    let tokens = json!({
        "access_token": REFRESHED_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": 3600,
    });
    token_response(tokens, reply)
}

/// The scripted answer around the usual (successful) `tokens` of the grant.
fn token_response(mut tokens: Value, reply: TokenReply) -> Response {
    match reply {
        TokenReply::IdToken(t) => {
            tokens["id_token"] = Value::from(t);
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(tokens),
            )
                .into_response()
        }
        TokenReply::NoIdToken => (StatusCode::OK, Json(tokens)).into_response(),
        TokenReply::OAuthError(e) => oauth_error(StatusCode::BAD_REQUEST, e),
        TokenReply::Raw(status, content_type, body) => {
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        TokenReply::Fields(fields) => {
            for (k, v) in fields.as_object().expect("token response members") {
                if v.is_null() {
                    tokens.as_object_mut().expect("object").remove(k);
                } else {
                    tokens[k] = v.clone();
                }
            }
            (StatusCode::OK, Json(tokens)).into_response()
        }
    }
}
