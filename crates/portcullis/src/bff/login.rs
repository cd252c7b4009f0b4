//! `GET /bff/login?returnTo=/path`: starts Authorization Code + PKCE (S256) with state and nonce.

use std::net::SocketAddr;

use axum::{
    Extension,
    extract::ConnectInfo,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use super::{login_state, return_to, single_param};
use crate::{
    AppState,
    crypto::random,
    http::problem::ApiError,
    oidc::{AuthRequest, OidcError, now_unix},
    session::{
        cookie,
        ticket::{Namespace, Ticket},
    },
};

pub async fn start(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = super::limit_login(&state, peer, &headers).await {
        return e.into_response();
    }
    match run(&state, &uri, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<Response, ApiError> {
    let query = uri.query();
    let return_to = return_to::sanitize(
        single_param(query, "returnTo")
            .map_err(|()| ApiError::BadRequest("duplicated parameter"))?
            .as_deref(),
    );
    let prompt_none = match single_param(query, "prompt")
        .map_err(|()| ApiError::BadRequest("duplicated parameter"))?
    {
        None => false,
        Some(p) if p == "none" => true,
        Some(_) => return Err(ApiError::BadRequest("unsupported prompt")),
    };
    if !state.oidc.is_ready() {
        tracing::warn!("login refused: OpenID Provider metadata not loaded");
        return Err(ApiError::Unavailable);
    }
    // Reuse this browser's binding so parallel logins in several tabs all stay valid.
    let binding = match cookie::single(headers, cookie::LOGIN_BINDING_COOKIE) {
        Some(b) if Ticket::parse(b).is_some() => b.to_owned(),
        _ => random::token::<32>().map_err(|_| ApiError::Unavailable)?,
    };
    let pending = login_state::PendingLogin {
        binding: binding.clone(),
        pkce_verifier: random::token::<32>().map_err(|_| ApiError::Unavailable)?,
        nonce: random::token::<32>().map_err(|_| ApiError::Unavailable)?,
        return_to,
        created_at: now_unix(),
        prompt_none,
        previous_session: cookie::single(headers, &state.config.session.cookie_name)
            .and_then(Ticket::parse)
            .map(|t| t.store_key(Namespace::Session).0),
    };
    let state_ticket = login_state::save(state, &pending).await?;
    let url = state
        .oidc
        .authorization_url(&AuthRequest {
            state: &state_ticket.encode(),
            nonce: &pending.nonce,
            pkce_verifier: &pending.pkce_verifier,
            prompt_none,
        })
        .map_err(|e| match e {
            OidcError::NotReady => ApiError::Unavailable,
            other => {
                tracing::error!(error = %other, "could not build the authorization URL");
                ApiError::Internal
            }
        })?;
    let location = HeaderValue::from_str(url.as_str()).map_err(|_| ApiError::Internal)?;
    let mut resp = StatusCode::FOUND.into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie::login_binding(&binding, state.config.oidc.login_timeout.as_secs()),
    );
    Ok(resp)
}
