//! `GET /bff/callback`: the provider's redirect back. Validates the state (single use, bound to
//! this browser, ≤ login timeout), exchanges the code with the client's credentials and the PKCE
//! verifier, validates the ID token, creates a brand-new session and sends the browser on.
//!
//! Every failure is one uniform "login failed" to the browser; the reason is logged.

use std::net::SocketAddr;

use axum::{
    Extension,
    extract::ConnectInfo,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Map;
use subtle::ConstantTimeEq;

use super::{login_state, return_to, single_param};
use crate::{
    AppState,
    audit::AuditEvent,
    crypto::random,
    http::problem::ApiError,
    oidc::{OidcError, Tokens, VerifiedIdToken, now_unix},
    session::{
        Session, SessionRecord, cookie,
        ticket::{Namespace, Ticket},
    },
    store::StoreKey,
};

pub async fn finish(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let peer_ip = peer.as_ref().map(|p| p.0.0.ip());
    let result = match super::limit_login(&state, peer, &headers).await {
        Ok(()) => run(&state, &uri, &headers, peer_ip).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            let outcome = super::login_outcome(&e);
            state.metrics.login("callback", outcome);
            let ctx = state.audit_context(&headers, peer_ip);
            state.audit.event(AuditEvent {
                event: "login_failure",
                outcome: Some(outcome),
                ctx: Some(&ctx),
                ..AuditEvent::default()
            });
            e.into_response()
        }
    }
}

fn failed(why: &str) -> ApiError {
    tracing::warn!(reason = why, "login callback refused");
    ApiError::LoginFailed
}

async fn run(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, ApiError> {
    let query = uri.query();
    let param = |name: &str| {
        single_param(query, name).map_err(|()| ApiError::BadRequest("duplicated parameter"))
    };
    let (state_param, code, error) = (param("state")?, param("code")?, param("error")?);
    let iss = param("iss")?;
    let state_param = state_param.ok_or_else(|| failed("no state parameter"))?;
    let pending = login_state::take(state, &state_param)
        .await?
        .ok_or_else(|| failed("unknown, used or expired state"))?;
    let binding_ok = cookie::single(headers, cookie::LOGIN_BINDING_COOKIE)
        .is_some_and(|b| bool::from(b.as_bytes().ct_eq(pending.binding.as_bytes())));
    if !binding_ok {
        return Err(failed("state was not started by this browser"));
    }
    state
        .oidc
        .check_authorization_response_iss(iss.as_deref())
        .map_err(|e| match e {
            OidcError::NotReady | OidcError::Unavailable(_) => ApiError::Unavailable,
            other => failed(&other.to_string()),
        })?;
    if let Some(err) = error {
        // The provider declined (user cancelled, or `prompt=none` found no session). The state
        // checked out, so `returnTo` is ours: send the browser back with a short, fixed code.
        let code = app_error_code(&err);
        tracing::info!(error = %code, prompt_none = pending.prompt_none, "provider returned an authorization error");
        state.metrics.login("callback", "declined");
        let ctx = state.audit_context(headers, peer);
        state.audit.event(AuditEvent {
            event: "login_failure",
            outcome: Some("declined"),
            ctx: Some(&ctx),
            ..AuditEvent::default()
        });
        return Ok(redirect(&with_error(&pending.return_to, code)));
    }
    let code = code.ok_or_else(|| failed("no code parameter"))?;
    let tokens = state
        .oidc
        .exchange_code(code, pending.pkce_verifier.clone(), &pending.nonce)
        .await
        .map_err(|e| match e {
            OidcError::NotReady | OidcError::Unavailable(_) => {
                tracing::error!(error = %e, "login failed: provider unavailable");
                ApiError::Unavailable
            }
            other => failed(&other.to_string()),
        })?;
    let mut tokens = tokens;
    let id = tokens
        .id_token
        .take()
        .ok_or_else(|| failed("no ID token"))?;
    let (session, set_cookie) = start_session(
        state,
        tokens,
        id,
        headers,
        pending.previous_session.clone().map(StoreKey),
    )
    .await?;
    tracing::info!(sub = %session.record.sub, "login succeeded");
    state.metrics.login("callback", "success");
    let ctx = state.audit_context(headers, peer);
    state.audit.event(AuditEvent {
        event: "login_success",
        subject: Some(&session.record.sub),
        session: Some(&session.key),
        ctx: Some(&ctx),
        ..AuditEvent::default()
    });
    let mut resp = redirect(&pending.return_to);
    resp.headers_mut().append(header::SET_COOKIE, set_cookie);
    Ok(resp)
}

/// Tokens of a successful login → a brand-new session and its exact `Set-Cookie` value. Shared by
/// the callback and `POST /bff/handshake`, so both create the same session: claims filtered by
/// `oidc.session_claims` (those the ID token lacks read from the UserInfo endpoint), the
/// provider's `sid`, a fresh anti-CSRF token, the absolute expiry, the
/// subject and `sid` indexes. The session the browser had before (its cookie in `headers`, and
/// `also_end`) is ended first, never upgraded (no fixation).
pub(super) async fn start_session(
    state: &AppState,
    tokens: Tokens,
    mut id: VerifiedIdToken,
    headers: &HeaderMap,
    also_end: Option<StoreKey>,
) -> Result<(Session, HeaderValue), ApiError> {
    let now = now_unix();
    // Claims the route policies and aggregate placeholders need, beyond those already in `user`.
    let needed = state.config.compose.claims_needed(&state.config.routes);
    let wanted: Vec<&str> = state
        .config
        .oidc
        .session_claims
        .iter()
        .chain(&needed)
        .map(String::as_str)
        .collect();
    state
        .oidc
        .add_userinfo_claims(&mut id, &tokens.access_token, &wanted)
        .await
        .map_err(|e| match e {
            OidcError::NotReady | OidcError::Unavailable(_) => ApiError::Unavailable,
            other => failed(&other.to_string()),
        })?;
    let user: Map<String, serde_json::Value> = id
        .claims
        .iter()
        .filter(|(k, _)| state.config.oidc.session_claims.iter().any(|c| c == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let claims: Map<String, serde_json::Value> = id
        .claims
        .iter()
        .filter(|(k, _)| !user.contains_key(*k) && needed.iter().any(|c| c == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let scopes = tokens
        .scopes
        .clone()
        .unwrap_or_else(|| state.config.oidc.scopes.clone());
    let record = SessionRecord {
        sub: id.sub,
        iss: id.iss,
        sid: id.sid,
        user,
        claims,
        scopes,
        csrf_token: random::token::<32>().map_err(|_| ApiError::Unavailable)?,
        access_token: tokens.access_token,
        access_expires_at: tokens.access_expires_at,
        refresh_token: tokens.refresh_token,
        id_token: Some(id.raw),
        created_at: now,
        absolute_expires_at: now + state.sessions.absolute_lifetime.as_secs(),
    };
    let previous = cookie::single(headers, &state.config.session.cookie_name)
        .and_then(Ticket::parse)
        .map(|t| t.store_key(Namespace::Session))
        .into_iter()
        .chain(also_end);
    for key in previous {
        state.sessions.destroy(&key).await.map_err(|e| {
            tracing::error!(error = %e, "could not end the previous session");
            ApiError::Unavailable
        })?;
    }
    let session = state.sessions.create(record).await.map_err(|e| {
        tracing::error!(error = %e, "could not store the new session");
        ApiError::Unavailable
    })?;
    let set_cookie = cookie::session(
        &state.config.session.cookie_name,
        &session.ticket.encode(),
        state.sessions.absolute_lifetime.as_secs(),
    );
    Ok((session, set_cookie))
}

/// Error codes the app may see after a failed login, from a fixed list: nothing the provider
/// wrote (`error_description`, an arbitrary `error`) is reflected to the browser.
fn app_error_code(provider_error: &str) -> &'static str {
    match provider_error {
        "login_required" => "login_required",
        "interaction_required" => "interaction_required",
        "consent_required" => "consent_required",
        "account_selection_required" => "account_selection_required",
        "access_denied" => "access_denied",
        _ => "login_failed",
    }
}

/// `return_to` with `error=<code>` added to its query (before any fragment).
fn with_error(return_to: &str, code: &str) -> String {
    let (path_query, fragment) = match return_to.split_once('#') {
        Some((pq, f)) => (pq, Some(f)),
        None => (return_to, None),
    };
    let sep = if path_query.contains('?') { '&' } else { '?' };
    let mut out = format!("{path_query}{sep}error={code}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let value = HeaderValue::from_str(&return_to::to_location(location))
        .unwrap_or_else(|_| HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_from_a_fixed_list() {
        assert_eq!(app_error_code("login_required"), "login_required");
        assert_eq!(app_error_code("<script>"), "login_failed");
        assert_eq!(app_error_code("server_error"), "login_failed");
    }

    #[test]
    fn error_is_added_to_the_query() {
        assert_eq!(with_error("/", "login_required"), "/?error=login_required");
        assert_eq!(
            with_error("/a?b=1", "access_denied"),
            "/a?b=1&error=access_denied"
        );
        assert_eq!(
            with_error("/a?b=1#top", "login_failed"),
            "/a?b=1&error=login_failed#top"
        );
    }
}
