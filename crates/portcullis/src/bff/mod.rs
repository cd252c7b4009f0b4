//! The `/bff` endpoints: login, callback, session, logout, CSP reports. Every response is
//! `no-store`.

mod backchannel_logout;
mod callback;
pub mod csp_report;
mod handshake;
mod login;
mod login_state;
mod logout;
pub mod return_to;
mod session_info;

use axum::{
    Router,
    response::IntoResponse,
    routing::{any, get, post},
};
use http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{AppState, audit::AuditEvent, http::problem::ApiError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::start))
        .route("/callback", get(callback::finish))
        // Every method: off, the endpoint is a 404 whatever the method (a 405 would advertise
        // `Allow: POST`); on, the handler answers other methods 405 itself.
        .route("/handshake", any(handshake::handshake))
        .route("/session", get(session_info::show))
        .route("/logout", post(logout::logout))
        .route("/csp-report", post(csp_report::receive))
        .route(
            "/backchannel-logout",
            post(backchannel_logout::backchannel_logout).layer(
                axum::extract::DefaultBodyLimit::max(backchannel_logout::MAX_BODY),
            ),
        )
        .fallback(|| async { ApiError::NotFound.into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

/// The single value of a query parameter; `Err` if it is repeated (parameter pollution).
fn single_param(query: Option<&str>, name: &str) -> Result<Option<String>, ()> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == name {
            if found.is_some() {
                return Err(());
            }
            found = Some(v.into_owned());
        }
    }
    Ok(found)
}

/// Brute-force and state-flooding guard for login and callback: per client IP, before any store
/// write or provider call.
async fn limit_login(
    state: &AppState,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: &http::HeaderMap,
) -> Result<(), ApiError> {
    use crate::ratelimit::{Bucket, LimitKey};
    let peer = peer.map(|p| p.0.0);
    let client = LimitKey::of_request(peer, headers, &state.config.server.trusted_proxies);
    let checked = state
        .limiter
        .check(
            Bucket::LoginPerIp,
            &client,
            state.config.rate_limits.login_per_ip,
        )
        .await;
    audit_rate_limit(
        state,
        &checked,
        Bucket::LoginPerIp,
        headers,
        peer.map(|p| p.ip()),
    );
    checked
}

/// Audits a refused rate-limit check (`rate_limited`, with the bucket as the reason).
fn audit_rate_limit(
    state: &AppState,
    checked: &Result<(), ApiError>,
    bucket: crate::ratelimit::Bucket,
    headers: &http::HeaderMap,
    peer: Option<std::net::IpAddr>,
) {
    if let Err(ApiError::TooManyRequests { .. }) = checked {
        let ctx = state.audit_context(headers, peer);
        state.audit.event(AuditEvent {
            event: "rate_limited",
            reason: Some(bucket.as_str()),
            ctx: Some(&ctx),
            ..AuditEvent::default()
        });
    }
}

/// The `outcome` label (and audit outcome) of a failed login or handshake.
fn login_outcome(e: &ApiError) -> &'static str {
    match e {
        ApiError::TooManyRequests { .. } => "rate_limited",
        ApiError::Unavailable | ApiError::Internal => "error",
        _ => "failure",
    }
}
