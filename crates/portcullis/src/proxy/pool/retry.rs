//! When a request may be sent a second time: only if the upstream cannot have acted on it.

use std::error::Error as StdError;

use http::{Request, Uri};
use http_body::Body;

use super::UpstreamBody;

/// What it takes to send an idempotent, bodiless request again: kept only for requests on a
/// reused connection, the ones an upstream's idle close can catch in flight.
pub(super) struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    pub(super) fn of(req: &Request<UpstreamBody>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        (idempotent && req.body().is_end_stream()).then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        })
    }

    pub(super) fn request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(http_body_util::Limited::new(axum::body::Body::empty(), 0));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// The connection ended before any response: closed or reset by the peer. Not a timeout, not a
/// malformed answer.
pub(super) fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}
