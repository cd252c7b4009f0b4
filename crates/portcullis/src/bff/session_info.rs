//! `GET /bff/session`: who is logged in and the anti-CSRF token. Never a token of the provider.

use axum::{
    Extension, Json,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    http::problem::ApiError,
    session::{Session, layer::CurrentSession},
};

pub async fn show(Extension(current): Extension<CurrentSession>) -> Response {
    match current.0 {
        None => ApiError::Unauthenticated.into_response(),
        Some(s) => Json(body(&s)).into_response(),
    }
}

/// The JSON of a session, also returned by `POST /bff/handshake` on success.
pub(super) fn body(s: &Session) -> Value {
    json!({
        "authenticated": true,
        "user": s.record.user,
        "csrfToken": s.record.csrf_token,
        "expiresAt": s.record.absolute_expires_at,
    })
}
