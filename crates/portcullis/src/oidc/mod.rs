//! The OpenID Connect relying party: discovery, the authorization request, the code and refresh
//! exchanges with strict ID token validation, and revocation.
//!
//! Built on the `openidconnect` crate (no hand-rolled JWT crypto). The provider's metadata is
//! loaded in the background and reloaded on failure, so the gateway starts even while the
//! provider is down and simply refuses logins (503) until it is back: fail closed.

mod error;
mod http_client;
mod id_token;
pub mod logout_token;
mod metadata;
mod revoke;
mod userinfo;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use openidconnect::{
    AuthenticationFlow, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenResponse,
    core::{CoreAuthPrompt, CoreResponseType, CoreTokenResponse},
};
use tokio::sync::Mutex;
use url::Url;

pub use error::OidcError;
pub use id_token::VerifiedIdToken;
use metadata::Discovered;

use crate::config::OidcConfig;

/// Tokens from a successful exchange. Never leaves the server.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    /// Unix seconds; `None` when the provider did not say (`expires_in` absent).
    pub access_expires_at: Option<u64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<VerifiedIdToken>,
    /// The granted scopes, when the provider said (`scope` of the token response).
    pub scopes: Option<Vec<String>>,
}

/// What the authorization request needs from the caller (all single-use, random).
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub prompt_none: bool,
}

#[derive(Debug)]
pub struct OidcProvider {
    cfg: OidcConfig,
    redirect_uri: RedirectUrl,
    http: http_client::TracedClient,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serializes JWKS re-fetches and remembers the last one, so unknown `kid`s cannot make us
    /// hammer the provider.
    last_jwks_fetch: Mutex<Option<tokio::time::Instant>>,
    /// The `alg`s of the valid ID tokens this process has seen from the provider: the algorithm
    /// the client is registered with, which logout tokens must use too (see
    /// [`verify_logout_token`](Self::verify_logout_token)).
    id_token_algs: RwLock<Vec<String>>,
}

const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How often the key set is re-read even when every `kid` is known: a key the provider withdrew
/// (compromised, or rotated out) stops being trusted within this time, not at the next restart.
pub const JWKS_REFRESH_EVERY: Duration = Duration::from_secs(600);
/// How old the ID token of a password grant may be: it was issued for this very request, so this
/// only absorbs clock skew (the same bound as an ID token at the end of the code flow).
const PASSWORD_GRANT_ID_TOKEN_MAX_AGE: u64 = 600;

/// How long a connection to the provider may stay idle: under the 5 s keep-alive timeout of
/// common servers, so the provider never closes a connection this client is about to use.
const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl OidcProvider {
    pub fn new(cfg: OidcConfig, redirect_uri: String) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            // Never follow redirects from the provider's endpoints (SSRF, token leakage).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.http_timeout)
            .connect_timeout(cfg.http_timeout)
            // Close idle connections before the provider does. A token request (a POST: never
            // retried) sent on a connection the provider is closing at that moment fails, and a
            // failed refresh is a 503 for the browser. Node.js (oidc-provider) and Apache close
            // idle keep-alive connections after 5 s; reqwest's default keeps them for 90 s.
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::Config(format!("HTTP client: {e}")))?;
        let http = http_client::TracedClient::new(http);
        let redirect_uri = RedirectUrl::new(redirect_uri)
            .map_err(|e| OidcError::Config(format!("redirect URI: {e}")))?;
        Ok(OidcProvider {
            cfg,
            redirect_uri,
            http,
            discovered: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
            id_token_algs: RwLock::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// `true` once the provider's metadata and keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<Discovered>> {
        self.discovered
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn ready(&self) -> Result<Arc<Discovered>, OidcError> {
        self.current().ok_or(OidcError::NotReady)
    }

    /// Fetches discovery metadata and the JWKS and swaps them in.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let d = Discovered::load(&self.cfg, &self.redirect_uri, &self.http).await?;
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(d));
        Ok(())
    }

    /// Keeps trying discovery in the background until it succeeds (backoff 1 s → 30 s).
    pub fn spawn_discovery(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                match me.discover().await {
                    Ok(()) => {
                        tracing::info!(issuer = %me.cfg.issuer, "OpenID Provider metadata loaded");
                        me.spawn_key_refresh();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %me.cfg.issuer, error = %e, retry_in = ?wait, "OpenID Provider discovery failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    /// Re-reads the key set every [`JWKS_REFRESH_EVERY`] for as long as this provider client is
    /// in use (a reload that replaces it ends the task). A failed read keeps the keys it has:
    /// an unreachable JWKS endpoint is no reason to stop verifying with keys already known, and
    /// an unknown `kid` still triggers a read of its own.
    pub fn spawn_key_refresh(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JWKS_REFRESH_EVERY).await;
                let Some(provider) = me.upgrade() else { return };
                if let Err(e) = provider.refresh_jwks().await {
                    tracing::warn!(issuer = %provider.cfg.issuer, error = %e, "periodic JWKS read failed; keeping the current keys");
                }
            }
        });
    }

    /// Reads the key set now and swaps it in (serialised with the reads an unknown `kid` makes).
    pub async fn refresh_jwks(&self) -> Result<(), OidcError> {
        let mut last = self.last_jwks_fetch.lock().await;
        let current = self.ready()?;
        let fresh = Arc::new(current.with_refetched_jwks(&self.cfg, &self.http).await?);
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        *last = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// The URL the browser is sent to: Authorization Code flow with PKCE S256, state and nonce.
    pub fn authorization_url(&self, req: &AuthRequest<'_>) -> Result<Url, OidcError> {
        let d = self.ready()?;
        let verifier = PkceCodeVerifier::new(req.pkce_verifier.to_owned());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let state = req.state.to_owned();
        let nonce = req.nonce.to_owned();
        let mut auth = d.client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        );
        for scope in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            auth = auth.add_scope(Scope::new(scope.clone()));
        }
        auth = auth.set_pkce_challenge(challenge);
        let mut operator_prompt = false;
        for (k, v) in &self.cfg.extra_auth_params {
            if k == "prompt" {
                operator_prompt = true;
                if req.prompt_none {
                    continue; // `none` must stand alone (OIDC Core §3.1.2.1)
                }
            }
            auth = auth.add_extra_param(k.clone(), v.clone());
        }
        if req.prompt_none {
            auth = auth.add_prompt(CoreAuthPrompt::None);
        } else if !operator_prompt
            && self.cfg.prompt_consent_for_offline_access
            && self.cfg.scopes.iter().any(|s| s == "offline_access")
        {
            // OIDC Core §11: offline access is requested with `prompt=consent`.
            auth = auth.add_prompt(CoreAuthPrompt::Consent);
        }
        Ok(auth.url().0)
    }

    /// Exchanges an authorization code (with the PKCE verifier) and validates the ID token
    /// against the nonce sent in the authorization request (OIDC Core 3.1.3.7).
    pub async fn exchange_code(
        &self,
        code: String,
        pkce_verifier: String,
        nonce: &str,
    ) -> Result<Tokens, OidcError> {
        let d = self.ready()?;
        let response = d
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(error::from_token_request)?;
        let raw = response
            .id_token()
            .ok_or_else(|| OidcError::InvalidIdToken("token response has no id_token".into()))?
            .to_string();
        let id_token = self.verify_id_token(&raw, Some(nonce), None).await?;
        tokens(&response, Some(id_token), self.config().refresh_skew)
    }

    /// Adds the claims of `wanted` that the ID token lacks from the provider's UserInfo endpoint,
    /// when it has one and something is missing (OIDC Core §5.3; a §5.4 provider puts the scope's
    /// claims only there). The ID token's own claims are never replaced: they are signed, the
    /// UserInfo answer is not. An answer about another `sub` fails the login (§5.3.2); an
    /// endpoint that is down or answers something unusable does not: the session then has the ID
    /// token's claims only, and the reason is logged.
    pub async fn add_userinfo_claims(
        &self,
        id: &mut VerifiedIdToken,
        access_token: &str,
        wanted: &[&str],
    ) -> Result<(), OidcError> {
        let d = self.ready()?;
        let Some(endpoint) = &d.userinfo_endpoint else {
            return Ok(());
        };
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| !id.claims.contains_key(*c) && userinfo::may_supply(c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match userinfo::fetch(&self.http, endpoint, access_token, &id.sub).await {
            Ok(claims) => {
                for name in missing {
                    if let Some(v) = claims.get(name) {
                        id.claims.insert(name.to_owned(), v.clone());
                    }
                }
                Ok(())
            }
            Err(OidcError::Unavailable(why)) => {
                tracing::warn!(error = %why, "no claims from the UserInfo endpoint; the session has the ID token's claims only");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// RFC 9207: the authorization response's `iss` must be exactly our issuer when present, and
    /// present when the provider advertises it (a mix-up attack routes another provider's code
    /// here). Checked before the code is used.
    pub fn check_authorization_response_iss(&self, iss: Option<&str>) -> Result<(), OidcError> {
        let d = self.ready()?;
        match iss {
            Some(iss) if iss == self.cfg.issuer => Ok(()),
            Some(_) => Err(OidcError::Rejected(
                "authorization response iss is not the configured issuer".into(),
            )),
            None if d.iss_parameter_required => Err(OidcError::Rejected(
                "authorization response has no iss although the provider advertises RFC 9207"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// Uses a refresh token. A returned ID token must be valid and name the same `iss` and `sub`
    /// as the session (OIDC Core 12.2).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        expected_sub: &str,
    ) -> Result<Tokens, OidcError> {
        let d = self.ready()?;
        let rt = RefreshToken::new(refresh_token.to_owned());
        let response = d
            .client
            .exchange_refresh_token(&rt)
            .request_async(&self.http)
            .await
            .map_err(error::from_token_request)?;
        let id_token = match response.id_token() {
            Some(t) => Some(
                self.verify_id_token(&t.to_string(), None, Some(expected_sub))
                    .await?,
            ),
            None => None,
        };
        tokens(&response, id_token, self.config().refresh_skew)
    }

    /// The resource owner password grant (RFC 6749 4.3; deprecated by RFC 9700, used only by
    /// `POST /bff/handshake` when `oidc.password_grant` is on) with the client's credentials, the
    /// same client authentication as the code flow and the configured scopes.
    ///
    /// The provider must return an ID token (the session needs a verified `sub`). It is validated
    /// like a refreshed one (no `nonce` was sent) and must also be fresh: issued for this request.
    ///
    /// `password` is taken by value and moved, not copied, into the request; `openidconnect`'s own
    /// copies (the `ResourceOwnerPassword`, the form-encoded body) are not zeroized by that crate.
    pub async fn password_grant(
        &self,
        username: &str,
        password: zeroize::Zeroizing<String>,
    ) -> Result<Tokens, OidcError> {
        let d = self.ready()?;
        let username = ResourceOwnerUsername::new(username.to_owned());
        let mut password = password;
        let password = ResourceOwnerPassword::new(std::mem::take(&mut *password));
        let mut request = d.client.exchange_password(&username, &password);
        for scope in &self.cfg.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(error::from_token_request)?;
        drop(password);
        let raw = response
            .id_token()
            .ok_or_else(|| OidcError::InvalidIdToken("token response has no id_token".into()))?
            .to_string();
        let id_token = self.verify_id_token(&raw, None, None).await?;
        let iat = id_token
            .claims
            .get("iat")
            .and_then(logout_token::numeric_date)
            .ok_or_else(|| OidcError::InvalidIdToken("no numeric iat".into()))?;
        if iat.saturating_add(PASSWORD_GRANT_ID_TOKEN_MAX_AGE) < now_unix() {
            return Err(OidcError::InvalidIdToken(
                "ID token of a password grant issued too long ago".into(),
            ));
        }
        tokens(&response, Some(id_token), self.config().refresh_skew)
    }

    async fn verify_id_token(
        &self,
        raw: &str,
        nonce: Option<&str>,
        expected_sub: Option<&str>,
    ) -> Result<VerifiedIdToken, OidcError> {
        let d = self.ready()?;
        let verified = match id_token::verify(&d, &self.cfg, raw, nonce, expected_sub) {
            Err(OidcError::UnknownSigningKey) => {
                // The provider may have rotated its keys: re-read the JWKS once and retry.
                let d = self.refetch_jwks(&d).await?;
                id_token::verify(&d, &self.cfg, raw, nonce, expected_sub)
            }
            other => other,
        }?;
        self.remember_id_token_alg(raw);
        Ok(verified)
    }

    /// Notes the `alg` of a verified ID token (a handful at most: the provider's algorithms).
    fn remember_id_token_alg(&self, raw: &str) {
        let Some(alg) = id_token::header_alg(raw) else {
            return;
        };
        let known = self
            .id_token_algs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&alg);
        if !known {
            let mut algs = self
                .id_token_algs
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
    }

    async fn refetch_jwks(&self, seen: &Arc<Discovered>) -> Result<Arc<Discovered>, OidcError> {
        let mut last = self.last_jwks_fetch.lock().await;
        let current = self.ready()?;
        if !Arc::ptr_eq(&current, seen) {
            return Ok(current); // someone else refreshed while we waited
        }
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_MIN_INTERVAL) {
            return Err(OidcError::UnknownSigningKey);
        }
        *last = Some(tokio::time::Instant::now());
        let fresh = Arc::new(current.with_refetched_jwks(&self.cfg, &self.http).await?);
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&fresh));
        tracing::info!("JWKS re-fetched after an unknown signing key");
        Ok(fresh)
    }

    /// Validates a back-channel logout token (signature, claims; not `jti` uniqueness), re-reading
    /// the provider's JWKS once if it names an unknown key.
    ///
    /// Its `alg` must also be one the provider's ID tokens use, once this process has seen one:
    /// Back-Channel Logout §2.6 step 3 validates it "in the same way" as an ID token's, which is
    /// the algorithm the client is registered with (OIDC Core §3.1.3.7 step 7). A provider that
    /// publishes keys for several algorithms (for its other clients) signs this client's logout
    /// tokens as its ID tokens; a token signed otherwise is refused. Before the first login of the
    /// process nothing is known, and any asymmetric algorithm is accepted, unless
    /// `oidc.id_token_signing_alg` names the one algorithm (then only it, from the start).
    pub async fn verify_logout_token(
        &self,
        raw: &str,
    ) -> Result<logout_token::LogoutRequest, OidcError> {
        let request = self.verify_logout_token_signature_and_claims(raw).await?;
        let alg = id_token::header_alg(raw);
        if let Some(pinned) = &self.cfg.id_token_signing_alg {
            // Configured: the same one algorithm as the ID tokens, on every instance from the
            // start, whatever this process has seen.
            return match alg {
                Some(a) if &a == pinned => Ok(request),
                other => Err(OidcError::InvalidIdToken(format!(
                    "logout token: alg {} is not oidc.id_token_signing_alg ({pinned})",
                    other.as_deref().unwrap_or("(none)")
                ))),
            };
        }
        let algs = self.id_token_algs.read().unwrap_or_else(|p| p.into_inner());
        match alg {
            Some(alg) if !algs.is_empty() && !algs.contains(&alg) => {
                Err(OidcError::InvalidIdToken(format!(
                    "logout token: alg {alg} is not the one of the provider's ID tokens ({})",
                    algs.join(", ")
                )))
            }
            _ => Ok(request),
        }
    }

    async fn verify_logout_token_signature_and_claims(
        &self,
        raw: &str,
    ) -> Result<logout_token::LogoutRequest, OidcError> {
        let d = self.ready()?;
        match logout_token::verify(&d, &self.cfg, raw) {
            Err(OidcError::UnknownSigningKey)
                if logout_token::claims_our_issuer_and_client(
                    raw,
                    &self.cfg.issuer,
                    &self.cfg.client_id,
                ) =>
            {
                let d = self.refetch_jwks(&d).await?;
                logout_token::verify(&d, &self.cfg, raw)
            }
            other => other,
        }
    }

    /// RFC 7009 revocation of a refresh token, when the provider offers it.
    pub async fn revoke_refresh_token(&self, token: &str) -> Result<(), OidcError> {
        let d = self.ready()?;
        match &d.revocation_endpoint {
            Some(endpoint) => {
                revoke::revoke(&self.http, endpoint, &self.cfg, d.auth_basic, token).await
            }
            None => Ok(()),
        }
    }

    /// The provider's end-session URL (RP-Initiated Logout 1.0) with `client_id` and
    /// `post_logout_redirect_uri`; the ID token only with the dangerous opt-in.
    pub fn end_session_url(&self, id_token: Option<&str>) -> Option<String> {
        let d = self.current()?;
        let mut url = d.end_session_endpoint.clone()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.cfg.client_id);
            q.append_pair(
                "post_logout_redirect_uri",
                self.cfg.post_logout_redirect_uri.as_str(),
            );
            if self.cfg.dangerous_send_id_token_hint_on_logout
                && let Some(t) = id_token
            {
                q.append_pair("id_token_hint", t);
            }
        }
        Some(url.into())
    }
}

/// The tokens of a successful token response. Only a `Bearer` access token is usable: the
/// gateway sends it as `Authorization: Bearer`, and RFC 6749 §7.1 says a client must not use a
/// token whose type it does not understand (a `DPoP` token needs proofs the gateway does not make).
///
/// An access token that lives no longer than `oidc.refresh_skew` is refreshed on every request
/// that uses it; that is logged once, as a hint to lower the skew.
fn tokens(
    response: &CoreTokenResponse,
    id_token: Option<VerifiedIdToken>,
    refresh_skew: Duration,
) -> Result<Tokens, OidcError> {
    if *response.token_type() != openidconnect::core::CoreTokenType::Bearer {
        return Err(OidcError::Rejected(format!(
            "token_type `{}` is not Bearer",
            response.token_type().as_ref()
        )));
    }
    let now = now_unix();
    let lifetime = response.expires_in().map(|d| d.as_secs());
    static SHORT_LIFETIME_LOGGED: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    if let Some(l) = lifetime
        && l <= refresh_skew.as_secs()
        && !SHORT_LIFETIME_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            expires_in = l,
            refresh_skew = refresh_skew.as_secs(),
            "access tokens live no longer than oidc.refresh_skew, so every request that uses one refreshes it first; a refresh_skew below the tokens' lifetime avoids that"
        );
    }
    Ok(Tokens {
        access_token: response.access_token().secret().clone(),
        access_expires_at: lifetime.map(|l| now.saturating_add(l)),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        id_token,
        scopes: response
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect()),
    })
}
