//! `POST /bff/handshake` (off unless `oidc.password_grant = true`): direct credentials → the
//! resource owner password grant at the provider, with the client's credentials, over the back
//! channel → a brand-new session, exactly as at the end of the callback.
//!
//! No session exists yet, so the CSRF layer lets this path through; its own proofs are:
//! * `Origin` is required and must be the app's origin; `Sec-Fetch-Site`, when sent, must be
//!   `same-origin` (403 otherwise);
//! * the body must be `application/json` (415 otherwise): a cross-site HTML form can only send
//!   `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, and anything
//!   else needs a CORS preflight, which Portcullis never grants.
//!
//! The body is at most [`MAX_BODY`] bytes (413) and exactly `{"username": "…", "password": "…"}`
//! (unknown fields, other types or empty strings → 400). Bad credentials, whatever the reason
//! (unknown user, wrong password, locked account…), are one uniform 401 `login-failed`, and the
//! gateway takes the same path for all of them (no user enumeration through Portcullis). A
//! provider outage is 503.
//!
//! The password is held in a [`Zeroizing`] string from parsing to the token request, and the
//! request body is wiped after parsing. Neither the password nor the username is logged: logs
//! carry a short SHA-256 prefix of the username, enough to correlate attempts on one account.

use crate::ratelimit::{Bucket, LimitKey};
use axum::{
    Json,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{callback, session_info};
use crate::{
    AppState,
    audit::{AuditContext, AuditEvent},
    csrf,
    http::problem::ApiError,
    oidc::OidcError,
};

/// Largest accepted request body, in bytes.
pub const MAX_BODY: usize = 4096;

/// Provider answers that mean *this client* may not use the password grant (or asked for scopes
/// it may not have): a configuration problem, the same for every user, so not worth hiding
/// behind the uniform 401. Any other refusal (`invalid_grant`, `invalid_request`,
/// `access_denied`, vendor codes…) may depend on the account, and is the uniform 401.
const CLIENT_LEVEL_ERRORS: [&str; 4] = [
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// The request body. Deliberately not `Debug`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: String,
    password: String,
}

struct Credentials {
    username: Zeroizing<String>,
    password: Zeroizing<String>,
}

pub async fn handshake(State(state): State<AppState>, req: Request) -> Response {
    if !state.config.oidc.password_grant {
        return ApiError::NotFound.into_response();
    }
    if req.method() != http::Method::POST {
        let mut resp = ApiError::MethodNotAllowed.into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let ctx = state.audit_context(req.headers(), crate::http::client_ip::peer_addr(&req));
    match run(&state, req, &ctx).await {
        Ok(r) => r,
        Err(e) => {
            let outcome = super::login_outcome(&e);
            state.metrics.login("handshake", outcome);
            state.audit.event(AuditEvent {
                event: "handshake_failure",
                outcome: Some(outcome),
                ctx: Some(&ctx),
                ..AuditEvent::default()
            });
            e.into_response()
        }
    }
}

async fn run(state: &AppState, req: Request, ctx: &AuditContext) -> Result<Response, ApiError> {
    check_origin(state, &req)?;
    if !is_json(req.headers()) {
        tracing::info!("handshake refused: the body is not application/json");
        return Err(ApiError::UnsupportedMediaType);
    }
    let (parts, body) = req.into_parts();
    let credentials = read_credentials(&parts.headers, body).await?;
    let user = user_ref(&credentials.username);

    // Everything above is local and cheap; from here on the provider is contacted. Guessing is
    // limited per client IP (spraying many users from one place) and per username (one user
    // guessed from many places); a refused attempt never reaches the provider.
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let client = LimitKey::of_request(peer, &parts.headers, &state.config.server.trusted_proxies);
    let limits = &state.config.rate_limits;
    let checked = state
        .limiter
        .check(Bucket::HandshakePerIp, &client, limits.handshake_per_ip)
        .await;
    super::audit_rate_limit(
        state,
        &checked,
        Bucket::HandshakePerIp,
        &parts.headers,
        peer.map(|p| p.ip()),
    );
    checked?;
    let checked = state
        .limiter
        .check(
            Bucket::HandshakePerUsername,
            &LimitKey::username(&credentials.username),
            limits.handshake_per_username,
        )
        .await;
    super::audit_rate_limit(
        state,
        &checked,
        Bucket::HandshakePerUsername,
        &parts.headers,
        peer.map(|p| p.ip()),
    );
    checked?;

    let Credentials { username, password } = credentials;
    let mut tokens = state
        .oidc
        .password_grant(&username, password)
        .await
        .map_err(|e| provider_error(&e, &user))?;
    drop(username);
    let Some(id) = tokens.id_token.take() else {
        tracing::warn!(user = %user, "handshake refused: the provider returned no ID token");
        return Err(ApiError::LoginFailed);
    };
    let (session, set_cookie) =
        callback::start_session(state, tokens, id, &parts.headers, None).await?;
    tracing::info!(sub = %session.record.sub, user = %user, "handshake login succeeded");
    state.metrics.login("handshake", "success");
    state.audit.event(AuditEvent {
        event: "handshake_success",
        subject: Some(&session.record.sub),
        session: Some(&session.key),
        ctx: Some(ctx),
        ..AuditEvent::default()
    });
    let mut resp = (StatusCode::OK, Json(session_info::body(&session))).into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `Origin` must be present, single and ours (unlike the CSRF layer's check, which tolerates an
/// absent `Origin` because the token is the proof there); `Sec-Fetch-Site` as in
/// [`csrf::check_origin`].
fn check_origin(state: &AppState, req: &Request) -> Result<(), ApiError> {
    if !req.headers().contains_key(header::ORIGIN) {
        tracing::info!("handshake refused: no Origin header");
        return Err(ApiError::CrossOrigin);
    }
    csrf::check_origin(state, req).inspect_err(|_| {
        tracing::info!("handshake refused: cross-origin request");
    })
}

/// Exactly one `Content-Type`, `application/json` (any case), parameters allowed; a `charset`
/// other than UTF-8 is refused (JSON is UTF-8, RFC 8259 8.1).
fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((name, v)) if name.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        Some((name, _)) => !name.trim().is_empty(),
        None => false,
    })
}

/// Reads at most [`MAX_BODY`] bytes and parses the credentials; the body buffer is wiped after.
async fn read_credentials(headers: &HeaderMap, body: Body) -> Result<Credentials, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        tracing::info!("handshake refused: body too large");
        return Err(ApiError::PayloadTooLarge);
    }
    let collected = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            tracing::info!("handshake refused: body too large");
            ApiError::PayloadTooLarge
        } else {
            tracing::info!("handshake refused: the body could not be read");
            ApiError::BadRequest("unreadable body")
        }
    })?;
    let mut bytes: Vec<u8> = collected.to_bytes().into();
    let parsed = serde_json::from_slice::<RawCredentials>(&bytes);
    bytes.zeroize();
    let raw = parsed.map_err(|e| {
        // serde's message may quote the input (e.g. a numeric password): only its category.
        tracing::info!(category = ?e.classify(), "handshake refused: malformed body");
        ApiError::BadRequest(r#"expected {"username": string, "password": string}"#)
    })?;
    let credentials = Credentials {
        username: Zeroizing::new(raw.username),
        password: Zeroizing::new(raw.password),
    };
    if credentials.username.is_empty() || credentials.password.is_empty() {
        tracing::info!("handshake refused: empty username or password");
        return Err(ApiError::BadRequest(
            "username and password must not be empty",
        ));
    }
    Ok(credentials)
}

fn provider_error(e: &OidcError, user: &str) -> ApiError {
    match e {
        OidcError::NotReady | OidcError::Unavailable(_) => {
            tracing::error!(error = %e, "handshake failed: provider unavailable");
            ApiError::Unavailable
        }
        OidcError::Rejected(code) if CLIENT_LEVEL_ERRORS.contains(&code.as_str()) => {
            tracing::error!(error = %e, "handshake failed: the provider refuses the password grant for this client (check oidc.password_grant, the client's grant types and oidc.scopes)");
            ApiError::Unavailable
        }
        OidcError::Rejected(_) => {
            tracing::info!(user = %user, error = %e, "handshake refused: bad credentials");
            ApiError::LoginFailed
        }
        OidcError::InvalidIdToken(_) | OidcError::UnknownSigningKey => {
            tracing::warn!(user = %user, error = %e, "handshake refused: ID token rejected");
            ApiError::LoginFailed
        }
        OidcError::Config(_) => {
            tracing::error!(error = %e, "handshake failed: OIDC client configuration");
            ApiError::Unavailable
        }
    }
}

/// A short, stable pseudonym of a username for the logs: the first 48 bits of its SHA-256.
fn user_ref(username: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, username.as_bytes());
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::CONTENT_TYPE,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn only_json_content_types_pass() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(&ct(&[ok])), "{ok}");
        }
        for bad in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/json; charset=iso-8859-1",
            "application/jsonx",
            "application/json;",
            "application/json; x",
            "text/plain; application/json",
        ] {
            assert!(!is_json(&ct(&[bad])), "{bad}");
        }
        assert!(!is_json(&ct(&[])));
        assert!(!is_json(&ct(&["application/json", "application/json"])));
    }

    #[test]
    fn user_ref_is_short_and_stable() {
        assert_eq!(user_ref("alice"), user_ref("alice"));
        assert_ne!(user_ref("alice"), user_ref("bob"));
        assert_eq!(user_ref("alice").len(), 12);
        assert!(!user_ref("alice").contains("alice"));
    }
}
