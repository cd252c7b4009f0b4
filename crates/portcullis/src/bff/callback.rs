//! `GET /bff/callback`: the provider's redirect back. Validates the state (single use, bound to
//! this browser, ≤ login timeout), exchanges the code with the client's credentials and the PKCE
//! verifier, validates the ID token, creates a brand-new session and sends the browser on.
//!
//! Every failure is one uniform "login failed" to the browser; the reason is logged.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Map;
use subtle::ConstantTimeEq;

use super::{login_state, return_to, single_param};
use crate::{
    AppState,
    crypto::random,
    http::problem::ApiError,
    oidc::{OidcError, now_unix},
    session::{
        SessionRecord, cookie,
        ticket::{Namespace, Ticket},
    },
    store::StoreKey,
};

pub async fn finish(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match run(&state, &uri, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn failed(why: &str) -> ApiError {
    tracing::warn!(reason = why, "login callback refused");
    ApiError::LoginFailed
}

async fn run(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    let query = uri.query();
    let param = |name: &str| {
        single_param(query, name).map_err(|()| ApiError::BadRequest("duplicated parameter"))
    };
    let (state_param, code, error) = (param("state")?, param("code")?, param("error")?);
    let state_param = state_param.ok_or_else(|| failed("no state parameter"))?;
    let pending = login_state::take(state, &state_param)
        .await?
        .ok_or_else(|| failed("unknown, used or expired state"))?;
    let binding_ok = cookie::single(headers, cookie::LOGIN_BINDING_COOKIE)
        .is_some_and(|b| bool::from(b.as_bytes().ct_eq(pending.binding.as_bytes())));
    if !binding_ok {
        return Err(failed("state was not started by this browser"));
    }
    if let Some(err) = error {
        let err: String = err
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        tracing::info!(error = %err, prompt_none = pending.prompt_none, "provider returned an authorization error");
        return Err(ApiError::LoginFailed);
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
    let id = tokens.id_token.ok_or_else(|| failed("no ID token"))?;
    let now = now_unix();
    let user: Map<String, serde_json::Value> = id
        .claims
        .iter()
        .filter(|(k, _)| state.config.oidc.session_claims.iter().any(|c| c == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let record = SessionRecord {
        sub: id.sub,
        iss: id.iss,
        sid: id.sid,
        user,
        csrf_token: random::token::<32>().map_err(|_| ApiError::Unavailable)?,
        access_token: tokens.access_token,
        access_expires_at: tokens.access_expires_at,
        refresh_token: tokens.refresh_token,
        id_token: Some(id.raw),
        created_at: now,
        absolute_expires_at: now + state.sessions.absolute_lifetime.as_secs(),
    };
    // A session the browser had before logging in is ended, never upgraded (no fixation).
    let previous = cookie::single(headers, &state.config.session.cookie_name)
        .and_then(Ticket::parse)
        .map(|t| t.store_key(Namespace::Session))
        .into_iter()
        .chain(pending.previous_session.clone().map(StoreKey));
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
    tracing::info!(sub = %session.record.sub, "login succeeded");
    let location = HeaderValue::from_str(&return_to::to_location(&pending.return_to))
        .unwrap_or_else(|_| HeaderValue::from_static("/"));
    let mut resp = StatusCode::FOUND.into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie::session(
            &state.config.session.cookie_name,
            &session.ticket.encode(),
            state.sessions.absolute_lifetime.as_secs(),
        ),
    );
    Ok(resp)
}
