//! The session layer: cookie → ticket → sealed record → [`CurrentSession`] in the request's
//! extensions. A store failure refuses the request (503): fail closed.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use tower::Service;

use super::{Session, cookie, ticket::Ticket};
use crate::{
    AppState,
    config::path_within,
    http::{
        problem::ApiError,
        wrap::{Next, Wrap},
    },
};

/// The session of this request, if the cookie named a live one.
#[derive(Debug, Clone, Default)]
pub struct CurrentSession(pub Option<Arc<Session>>);

/// The session layer's step (see [`crate::http::wrap`]).
#[derive(Debug, Clone)]
pub struct LoadSession(pub AppState);

impl Wrap for LoadSession {
    async fn wrap<S>(self, mut req: Request, next: Next<S>) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let state = self.0;
        if !needs_session(&state, &req) {
            req.extensions_mut().insert(CurrentSession(None));
            return next.run(req).await;
        }
        let name = &state.config.session.cookie_name;
        let ticket = cookie::single(req.headers(), name).and_then(Ticket::parse);
        let current = match ticket {
            None => CurrentSession(None),
            Some(t) => match state.sessions.load(t).await {
                Ok(s) => CurrentSession(s.map(Arc::new)),
                Err(e) => {
                    tracing::error!(error = %e, "session store failure: refusing the request");
                    return ApiError::Unavailable.into_response();
                }
            },
        };
        req.extensions_mut().insert(current);
        next.run(req).await
    }
}

/// Only `/bff/*`, `/api/*`, the route table, the aggregates and state-changing requests (which the
/// CSRF layer checks against the session, whatever the path) need the session. A safe request for anything else —
/// the PWA's files, the SPA fallback — is answered without touching the store: no lookup per
/// asset, no store outage turning the app shell into a 503, no idle timeout slid by a page
/// fetching its images.
fn needs_session(state: &AppState, req: &Request) -> bool {
    let path = req.uri().path();
    !crate::csrf::is_safe(req.method())
        || path_within(path, &state.config.bff_prefix)
        || path_within(path, "/api")
        || state
            .config
            .routes
            .iter()
            .any(|r| path_within(path, &r.prefix))
        || state
            .config
            .compose
            .aggregates
            .iter()
            .any(|a| a.matches(path))
}
