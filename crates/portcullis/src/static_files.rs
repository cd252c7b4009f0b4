//! The PWA's static files, for paths no route claims: GET and HEAD only, no directory listing,
//! no dotfiles. (Hardened hosting with CSP nonces is a layer of its own.)

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::Method;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::{AppState, http::problem::ApiError};

pub async fn serve(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let Some(root) = &state.config.static_root else {
        return Err(ApiError::NotFound);
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed);
    }
    if req.uri().path().split('/').any(|seg| seg.starts_with('.')) {
        return Err(ApiError::NotFound);
    }
    let resp = ServeDir::new(root)
        .append_index_html_on_directories(true)
        .oneshot(req)
        .await
        .map_err(|_| ApiError::Internal)?;
    if resp.status() == http::StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound);
    }
    Ok(resp.into_response())
}
