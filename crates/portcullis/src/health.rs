//! Liveness and readiness. Ready means: not shutting down, provider metadata loaded and the store
//! answering.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::AppState;

/// Whether the process is shutting down: set once, at SIGTERM/SIGINT, so load balancers see
/// `/readyz` fail while in-flight requests drain. Shared by every state a reload builds.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.lifecycle.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "draining": true})),
        );
    }
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
