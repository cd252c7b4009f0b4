//! Closing connections that hold a slot without using it, where hyper does not.
//!
//! hyper closes an HTTP/1.1 connection that takes longer than `server.header_read_timeout` to
//! send a request head, but nothing times the first bytes, which hyper-util's `auto` server reads
//! to tell an HTTP/2 preface from HTTP/1, and its HTTP/2 server has no such timer at all: a client
//! that sent nothing, part of a preface, the preface and SETTINGS and then nothing, or left a
//! header block open (HEADERS without END_HEADERS), held its connection for ever. Answering PINGs
//! is cheap for an attacker, so keep-alive pings do not help.
//!
//! The watchdog closes a connection when, for a whole period, no request started on it and
//! none is in flight: never a request at all (either protocol; hyper would close an HTTP/1.1 one
//! at the same moment), or HTTP/2 with every stream done. An HTTP/2 request counts as in flight
//! from its start until its response body is dropped, so a long response (server-sent events
//! that stay quiet for minutes) keeps its connection. HTTP/1.1 connections that served a
//! request are left to hyper, which tracks them itself; their requests pay nothing here.

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// What the watchdog knows of one connection's requests.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    h2: AtomicBool,
    h2_in_flight: AtomicUsize,
}

impl Activity {
    /// Called as a request starts; for an HTTP/2 request, returns the guard that keeps it in
    /// flight (move it into the response body with [`InFlight::attach`]).
    pub fn started(self: &Arc<Self>, version: http::Version) -> Option<InFlight> {
        self.started.fetch_add(1, Ordering::Relaxed);
        (version == http::Version::HTTP_2).then(|| {
            self.h2.store(true, Ordering::Relaxed);
            self.h2_in_flight.fetch_add(1, Ordering::Relaxed);
            InFlight(Arc::clone(self))
        })
    }

    /// `true` once a whole `period` passed with no request started and none in flight (see the
    /// module docs); `false` as soon as the connection is gone (`gone` resolves: its task dropped
    /// the sender). Run as a task of its own beside the connection: it wakes once a period and
    /// at the end, where a branch in the connection's own task would be polled at every wake-up
    /// of it; and it ends with the connection, so closed connections leave no task behind.
    pub async fn watch(
        activity: Weak<Activity>,
        period: Duration,
        mut gone: tokio::sync::oneshot::Receiver<()>,
    ) -> bool {
        let Some(mut seen) = activity
            .upgrade()
            .map(|a| a.started.load(Ordering::Relaxed))
        else {
            return false;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = &mut gone => return false,
            }
            let Some(a) = activity.upgrade() else {
                return false;
            };
            let now = a.started.load(Ordering::Relaxed);
            let unused = now == 0
                || (a.h2.load(Ordering::Relaxed) && a.h2_in_flight.load(Ordering::Relaxed) == 0);
            if now == seen && unused {
                return true;
            }
            seen = now;
        }
    }
}

/// An HTTP/2 request in flight: from its start until its response body is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.h2_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    /// Keeps the request in flight for as long as `response`'s body lives.
    pub fn attach(self, response: axum::response::Response) -> axum::response::Response {
        response.map(|body| {
            Body::new(Guarded {
                body,
                _in_flight: self,
            })
        })
    }
}

/// A response body holding its request's [`InFlight`] guard.
struct Guarded {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);

    async fn watched(a: &Arc<Activity>, periods: u32) -> Option<bool> {
        let (_open, gone) = tokio::sync::oneshot::channel();
        tokio::time::timeout(
            PERIOD * periods,
            Activity::watch(Arc::downgrade(a), PERIOD, gone),
        )
        .await
        .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_a_period() {
        let a = Arc::new(Activity::default());
        assert_eq!(watched(&a, 3).await, Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn http1_after_a_request_is_left_to_hyper() {
        let a = Arc::new(Activity::default());
        assert!(a.started(http::Version::HTTP_11).is_none());
        assert_eq!(watched(&a, 10).await, None, "never idle");
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_ends_with_its_connection_at_once() {
        let a = Arc::new(Activity::default());
        assert!(a.started(http::Version::HTTP_11).is_none());
        let (open, gone) = tokio::sync::oneshot::channel::<()>();
        let watch = tokio::spawn(Activity::watch(Arc::downgrade(&a), PERIOD, gone));
        drop(open);
        let ended = tokio::time::timeout(PERIOD / 2, watch)
            .await
            .expect("ended before a period");
        assert!(!ended.expect("join"), "gone, not idle");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_response_in_flight_keeps_the_connection_until_its_body_is_dropped() {
        let a = Arc::new(Activity::default());
        let guard = a.started(http::Version::HTTP_2).expect("h2 guard");
        let response = guard.attach(axum::response::Response::new(Body::empty()));
        assert_eq!(watched(&a, 10).await, None, "a long response keeps it");
        drop(response);
        assert_eq!(
            watched(&a, 3).await,
            Some(true),
            "idle once the body is gone"
        );
    }
}
