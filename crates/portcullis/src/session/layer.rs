//! The session layer: cookie → ticket → sealed record → [`CurrentSession`] in the request's
//! extensions. A store failure refuses the request (503): fail closed.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{Session, cookie, ticket::Ticket};
use crate::{AppState, http::problem::ApiError};

/// The session of this request, if the cookie named a live one.
#[derive(Debug, Clone, Default)]
pub struct CurrentSession(pub Option<Arc<Session>>);

pub async fn load_session(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
