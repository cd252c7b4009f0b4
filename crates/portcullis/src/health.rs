//! Liveness and readiness. Ready means: not shutting down, provider metadata loaded and the store
//! answering.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
    task::{Context, Poll},
};

use axum::{
    Json,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::future::Either;
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::{AppState, http::problem::ApiError};

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

/// `/healthz` and `/readyz` on the public listener, answered before the session and CSRF
/// layers (so they never depend on, or touch, a session). A plain layer rather than a router:
/// every other request passes with one string comparison, no route table lookup or boxing.
#[derive(Debug, Clone)]
pub struct ProbesLayer(pub AppState);

impl<S> Layer<S> for ProbesLayer {
    type Service = Probes<S>;

    fn layer(&self, inner: S) -> Probes<S> {
        Probes {
            state: self.0.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Probes<S> {
    state: AppState,
    inner: S,
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Probes<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<ProbeFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        let ready = match path {
            "/healthz" => false,
            "/readyz" => true,
            _ => return Either::Right(self.inner.call(req)),
        };
        let method = req.method().clone();
        let state = self.state.clone();
        Either::Left(Box::pin(async move {
            if method != Method::GET && method != Method::HEAD {
                let mut resp = ApiError::MethodNotAllowed.into_response();
                resp.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
                return Ok(resp);
            }
            Ok(if ready {
                self::ready(State(state)).await.into_response()
            } else {
                live().await.into_response()
            })
        }))
    }
}
