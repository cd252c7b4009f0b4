//! `POST /bff/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0. The provider posts a
//! signed logout token (form-encoded); every session it names — by provider session `sid`, else
//! by subject — ends on every instance sharing the store. Answers 200, or 400 with an OAuth-style
//! error object (spec section 2.8); never cached.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::{
    AppState,
    audit::AuditEvent,
    oidc::{OidcError, now_unix},
    store::StoreKey,
};

/// Logout tokens are a few KiB at most.
pub const MAX_BODY: usize = 16 * 1024;

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn backchannel_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected a form-encoded logout_token",
        );
    }
    let mut tokens = url::form_urlencoded::parse(&body).filter(|(k, _)| k == "logout_token");
    let raw = match (tokens.next(), tokens.next()) {
        (Some((_, t)), None) => t.into_owned(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "exactly one logout_token is required",
            );
        }
    };
    let request = match state.oidc.verify_logout_token(&raw).await {
        Ok(r) => r,
        Err(OidcError::NotReady | OidcError::Unavailable(_)) => {
            tracing::warn!("back-channel logout: provider keys unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout token rejected");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid logout token",
            );
        }
    };
    // Replay protection across instances. The jti is remembered only once its sessions are
    // ended: a token whose logout failed (503) must still work when the provider retries it.
    // Two deliveries racing past the check both end the same sessions, which is harmless.
    let jti_key = StoreKey(format!("j:{}", jti_digest(&request.iss, &request.jti)));
    let store = state.sessions.store();
    match store.get(&jti_key).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            tracing::warn!("back-channel logout token replayed (jti seen before)");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "logout token already used",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout: store unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    }
    let ended = match (&request.sid, &request.sub) {
        (Some(sid), _) => state.sessions.end_provider_session(&request.iss, sid).await,
        (None, Some(sub)) => state.sessions.end_subject(&request.iss, sub).await,
        (None, None) => Ok(0),
    };
    if ended.is_ok() {
        let remember = std::time::Duration::from_secs(
            request.remember_until.saturating_sub(now_unix()).max(60),
        );
        if let Err(e) = store
            .set(&jti_key, Bytes::from_static(b"1"), remember)
            .await
        {
            // The sessions are ended; only a replay of this token would go unnoticed.
            tracing::warn!(error = %e, "back-channel logout: could not remember the jti");
        }
    }
    match ended {
        Ok(n) => {
            tracing::info!(
                sessions = n,
                by_sid = request.sid.is_some(),
                "back-channel logout"
            );
            state.audit.event(AuditEvent {
                event: "backchannel_logout",
                reason: Some(if request.sid.is_some() {
                    "sid"
                } else {
                    "subject"
                }),
                subject: request.sub.as_deref(),
                count: Some(n),
                ..AuditEvent::default()
            });
            let mut r = StatusCode::OK.into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout: could not end the sessions");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            )
        }
    }
}

fn jti_digest(iss: &str, jti: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["portcullis/v1/logout-jti\0", iss, "\0", jti] {
        ctx.update(part.as_bytes());
    }
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ctx.finish(),
    )
}
