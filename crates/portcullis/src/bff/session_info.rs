//! `GET /bff/session`: who is logged in and the anti-CSRF token. Never a token of the provider.

use axum::{
    Extension, Json,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{http::problem::ApiError, session::layer::CurrentSession};

pub async fn show(Extension(current): Extension<CurrentSession>) -> Response {
    match current.0 {
        None => ApiError::Unauthenticated.into_response(),
        Some(s) => Json(json!({
            "authenticated": true,
            "user": s.record.user,
            "csrfToken": s.record.csrf_token,
            "expiresAt": s.record.absolute_expires_at,
        }))
        .into_response(),
    }
}
