//! `POST /bff/logout` (the CSRF layer has already checked the token): revoke the refresh token at
//! the provider when it offers revocation, delete the session, expire the cookie, and return the
//! provider's end-session URL (built with `client_id`, never with a token unless dangerously
//! configured). `Clear-Site-Data` (`[headers] clear_site_data_on_logout`) goes with it.

use axum::{
    Extension, Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::header;
use serde_json::json;

use crate::{
    AppState,
    audit::AuditEvent,
    http::{problem::ApiError, security_headers::clear_site_data},
    session::cookie,
    session::layer::CurrentSession,
};

const CLEAR_SITE_DATA: http::HeaderName = http::HeaderName::from_static("clear-site-data");

pub async fn logout(
    State(state): State<AppState>,
    Extension(current): Extension<CurrentSession>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: http::HeaderMap,
) -> Response {
    let Some(session) = current.0 else {
        return ApiError::Unauthenticated.into_response();
    };
    if let Some(rt) = &session.record.refresh_token
        && let Err(e) = state.oidc.revoke_refresh_token(rt).await
    {
        // The session is still ended locally; the token expires at the provider on its own.
        tracing::warn!(error = %e, "refresh token revocation failed");
    }
    if let Err(e) = state.sessions.destroy(&session.key).await {
        tracing::error!(error = %e, "logout: could not delete the session");
        return ApiError::Unavailable.into_response();
    }
    tracing::info!(sub = %session.record.sub, "logout");
    let ctx = state.audit_context(&headers, peer.map(|p| p.0.0.ip()));
    state.audit.event(AuditEvent {
        event: "logout",
        subject: Some(&session.record.sub),
        session: Some(&session.key),
        ctx: Some(&ctx),
        ..AuditEvent::default()
    });
    let logout_url = state
        .oidc
        .end_session_url(session.record.id_token.as_deref());
    let mut resp = Json(json!({ "logoutUrl": logout_url })).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie::expire_session(&state.config.session.cookie_name),
    );
    // Drops what the app kept in this browser (HTTP cache, storage, service workers) once the
    // session is gone. Never `cookies` by default: it would clear every cookie of the whole
    // registrable domain (sibling apps' sessions too), and ours is already expired above.
    if let Some(v) = clear_site_data(&state.config.headers.clear_site_data_on_logout) {
        resp.headers_mut().insert(CLEAR_SITE_DATA, v);
    }
    resp
}
