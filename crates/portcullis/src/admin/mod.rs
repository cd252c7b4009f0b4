//! The operators' listener: health, readiness and session revocation, on its own address and
//! behind a bearer token, so none of it is reachable through the public listener.
//!
//! - `GET  /healthz`, `GET /readyz`
//! - `GET  /sessions?subject=S` → `{"subject", "sessions": <live count>}`
//! - `POST /sessions/revoke` with `{"subject": S}`, `{"sid": X}` or `{"all": true}` →
//!   `{"revoked": n}`; immediate on every instance sharing the store.
//! - `GET  /metrics` → the Prometheus / OpenMetrics exposition (see `crate::metrics`).
//! - `POST /reload` → re-reads the config file like SIGHUP (see `crate::reload`): 200
//!   `{"reloaded": true}`, or 422 when refused (the reason is in the gateway's log).

use std::sync::Weak;

use axum::{
    Extension, Json, Router,
    extract::{
        Query, Request, State,
        rejection::{JsonRejection, QueryRejection},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::header;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::{
    AppState, audit::AuditEvent, health, http::problem::ApiError, reload::Reloader,
    session::SessionError,
};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/sessions", get(list))
        .route("/sessions/revoke", post(revoke))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        // Problems like on the public listener (axum's defaults are empty bodies); behind the
        // token, so an unknown path tells a caller without it no more than a known one.
        .fallback(|| async { ApiError::NotFound.into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(admin) = &state.config.admin else {
        return ApiError::NotFound.into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(admin.token.expose().as_bytes())) {
        next.run(req).await
    } else {
        tracing::warn!(
            path = req.uri().path(),
            "admin request without a valid token"
        );
        ApiError::Unauthenticated.into_response()
    }
}

/// The token of `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 9110
/// §11.1), and RFC 6750 §2.1 allows more than one space after it: operators' tools differ.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.csp_reports());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// The reloader is attached by `server::serve` (absent when only a listener runs: 404).
async fn reload(reloader: Option<Extension<Weak<Reloader>>>) -> Response {
    let Some(reloader) = reloader.and_then(|Extension(r)| r.upgrade()) else {
        return ApiError::NotFound.into_response();
    };
    match reloader.reload().await {
        Ok(()) => Json(json!({"reloaded": true})).into_response(),
        Err(_) => (
            http::StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"reloaded": false, "detail": "refused; see the gateway log"})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct SubjectQuery {
    subject: String,
}

async fn list(
    State(state): State<AppState>,
    q: Result<Query<SubjectQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return ApiError::BadRequest("give a subject").into_response();
    };
    let iss = &state.config.oidc.issuer;
    match state
        .sessions
        .live_sessions_of_subject(iss, &q.subject)
        .await
    {
        Ok(n) => Json(json!({"subject": q.subject, "sessions": n})).into_response(),
        Err(e) => store_failure(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    subject: Option<String>,
    sid: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn revoke(
    State(state): State<AppState>,
    r: Result<Json<RevokeRequest>, JsonRejection>,
) -> Response {
    let r = match r {
        Ok(Json(r)) => r,
        Err(JsonRejection::MissingJsonContentType(_)) => {
            return ApiError::UnsupportedMediaType.into_response();
        }
        Err(_) => return ApiError::BadRequest("malformed revoke request").into_response(),
    };
    let iss = &state.config.oidc.issuer;
    let (result, by) = match (&r.subject, r.sid, r.all) {
        (Some(sub), None, false) => (state.sessions.end_subject(iss, sub).await, "subject"),
        (None, Some(sid), false) => (state.sessions.end_provider_session(iss, &sid).await, "sid"),
        (None, None, true) => (state.sessions.end_all().await, "all"),
        _ => return ApiError::BadRequest("give exactly one of subject, sid, all").into_response(),
    };
    match result {
        Ok(n) => {
            revoked(&state, by, r.subject.as_deref(), n);
            Json(json!({"revoked": n})).into_response()
        }
        Err(e) => store_failure(e),
    }
}

/// Logs and audits an operator's revocation (the admin API and the `sessions revoke` CLI).
/// `by`: `subject`, `sid` or `all`.
pub fn revoked(state: &AppState, by: &'static str, subject: Option<&str>, n: usize) {
    tracing::info!(revoked = n, by, "sessions revoked by an operator");
    state.audit.event(AuditEvent {
        event: "operator_revocation",
        reason: Some(by),
        subject,
        count: Some(n),
        ..AuditEvent::default()
    });
}

fn store_failure(e: SessionError) -> Response {
    tracing::error!(error = %e, "admin: session store failure");
    ApiError::Unavailable.into_response()
}
