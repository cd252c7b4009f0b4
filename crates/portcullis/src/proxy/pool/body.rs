//! The response body that hands its HTTP/1 connection back to the pool when it ends.

use std::{
    fmt,
    pin::Pin,
    sync::Weak,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http1};

use super::{Pool, UpstreamBody};

/// Hands an HTTP/1 connection back when the response body is done with it.
pub(super) struct GiveBack {
    pub(super) pool: Weak<Pool>,
    pub(super) sender: Option<http1::SendRequest<UpstreamBody>>,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) else {
            return;
        };
        if sender.is_ready() {
            pool.park(sender);
        } else if !sender.is_closed() && tokio::runtime::Handle::try_current().is_ok() {
            // The connection task has not caught up with the end of the body yet (or the body
            // was dropped early and is being drained): park it once it is idle.
            let mut sender = sender;
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.park(sender);
                }
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body; at its end, the connection goes back to the pool.
    pub struct ResponseBody {
        #[pin]
        pub(super) inner: Incoming,
        pub(super) give_back: Option<GiveBack>,
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            drop(this.give_back.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
