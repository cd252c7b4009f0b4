//! Server-Sent Events pass through unbuffered: the upstream body is forwarded frame by frame as
//! it arrives (nothing in the stack collects response bodies, and the route `timeout` bounds
//! only the wait for the response head). What this module adds: an event stream belongs to a
//! session, so it ends when the session ends (see [`crate::session::streams`]); the browser's
//! `EventSource` then reconnects, gets 401 and stops.

use super::pool::ResponseBody;
use crate::session::streams::StreamHandle;
use axum::body::Body;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, StreamBody};

/// `Content-Type: text/event-stream` (parameters ignored).
pub fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The upstream body, ended early (cleanly: a final empty chunk) when the session ends.
pub fn until_session_ends(body: ResponseBody, handle: StreamHandle) -> Body {
    let frames =
        futures_util::stream::unfold((body, handle), |(mut body, mut handle)| async move {
            tokio::select! {
                biased;
                reason = handle.ended() => {
                    tracing::debug!(?reason, "event stream closed: session ended");
                    None
                }
                frame = body.frame() => frame.map(|f| (f, (body, handle))),
            }
        });
    Body::new(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn event_streams_are_recognised() {
        let mut h = HeaderMap::new();
        for (v, yes) in [
            ("text/event-stream", true),
            ("Text/Event-Stream; charset=utf-8", true),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(is_event_stream(&h), yes, "{v}");
        }
    }
}
