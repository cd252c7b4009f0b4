//! Liveness and readiness. Ready means: provider metadata loaded and the store answering.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::AppState;

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let idp = state.oidc.is_ready();
    let store = state.sessions.store().ping().await.is_ok();
    let status = if idp && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": idp && store, "idp": idp, "store": store})),
    )
}
