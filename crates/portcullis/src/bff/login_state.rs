//! Pending logins, server-side: one sealed record per authorization request, keyed by its
//! `state`, single-use (atomically taken), expiring after `oidc.login_timeout` (≤ 10 min), and
//! bound to the browser by a random value in the `__Host-Portcullis-Login` cookie. Several tabs
//! share the binding and each has its own state, so concurrent logins do not disturb each other.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    AppState,
    crypto::seal::{self, Purpose},
    http::problem::ApiError,
    oidc::now_unix,
    session::ticket::{Namespace, Ticket},
};

#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    pub binding: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub return_to: String,
    pub created_at: u64,
    pub prompt_none: bool,
    /// Store key of the session this browser had when it started the login (its `SameSite=Strict`
    /// cookie comes with the app's own navigation here, but not with the provider's cross-site
    /// redirect to the callback): ended once the new session exists.
    pub previous_session: Option<String>,
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "session store failure (login state)");
    ApiError::Unavailable
}

pub async fn save(state: &AppState, pending: &PendingLogin) -> Result<Ticket, ApiError> {
    let ticket = Ticket::generate().map_err(|_| ApiError::Unavailable)?;
    let key = ticket.store_key(Namespace::LoginState);
    let sealed = seal::seal_json(
        state.sessions.keys(),
        Purpose::LoginState,
        ticket.secret(),
        key.0.as_bytes(),
        pending,
    )
    .map_err(|_| ApiError::Unavailable)?;
    state
        .sessions
        .store()
        .set(&key, Bytes::from(sealed), state.config.oidc.login_timeout)
        .await
        .map_err(store_error)?;
    Ok(ticket)
}

/// Takes (reads and deletes) the pending login a `state` names. `None` if unknown, already used,
/// expired or not openable.
pub async fn take(state: &AppState, state_param: &str) -> Result<Option<PendingLogin>, ApiError> {
    let Some(ticket) = Ticket::parse(state_param) else {
        return Ok(None);
    };
    let key = ticket.store_key(Namespace::LoginState);
    let Some(sealed) = state
        .sessions
        .store()
        .take(&key)
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let Ok(pending) = seal::open_json::<PendingLogin>(
        state.sessions.keys(),
        Purpose::LoginState,
        ticket.secret(),
        key.0.as_bytes(),
        &sealed,
    ) else {
        return Ok(None);
    };
    let age = now_unix().saturating_sub(pending.created_at);
    if age > state.config.oidc.login_timeout.as_secs() {
        return Ok(None);
    }
    Ok(Some(pending))
}
