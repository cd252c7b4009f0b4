//! Real streaming upstreams on 127.0.0.1 for the gateway's SSE and WebSocket tests.
//!
//! - [`SseUpstream`]: answers every request with `text/event-stream`; event 1 goes out at once,
//!   event *n* + 1 only after the test called [`SseUpstream::release`] *n* times. A test that
//!   reads event 1 through the gateway and only then releases event 2 proves that nothing in
//!   between buffers (a buffering gateway makes it hang; bound it with a timeout). The stream
//!   then stays open, so tests can see who closes it ([`SseUpstream::closed`]).
//! - [`WsUpstream`]: a WebSocket server that records every handshake's headers, picks the
//!   subprotocol `chat.v2` when offered, answers each text message `m` with `echo:m`, and
//!   records how each connection ended (the close code it received, if any).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use anyhow::Context;
use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, header};
use tokio::{
    net::TcpListener,
    sync::{Notify, Semaphore},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request as WsRequest, Response as WsResponse},
};

type Headers = Vec<(String, String)>;

fn headers_of(h: &http::HeaderMap) -> Headers {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An SSE server whose events after the first wait for the test's go-ahead.
#[derive(Debug)]
pub struct SseUpstream {
    addr: SocketAddr,
    permits: Arc<Semaphore>,
    requests: Arc<Mutex<Vec<Headers>>>,
    closed: Arc<AtomicUsize>,
    closed_notify: Arc<Notify>,
    server: JoinHandle<()>,
}

/// Increments the "closed" count when a response stream is dropped (the gateway let go of it).
struct CloseCounter(Arc<AtomicUsize>, Arc<Notify>);

impl Drop for CloseCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.notify_waiters();
    }
}

impl SseUpstream {
    /// Binds a free loopback port and serves until dropped.
    pub async fn start() -> anyhow::Result<SseUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind SSE upstream")?;
        let addr = listener.local_addr()?;
        let permits = Arc::new(Semaphore::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let closed_notify = Arc::new(Notify::new());
        let (p, r, c, n) = (
            Arc::clone(&permits),
            Arc::clone(&requests),
            Arc::clone(&closed),
            Arc::clone(&closed_notify),
        );
        let app = axum::Router::new().fallback(move |req: Request| {
            let (p, c, n) = (Arc::clone(&p), Arc::clone(&c), Arc::clone(&n));
            lock(&r).push(headers_of(req.headers()));
            async move { event_stream(p, CloseCounter(c, n)) }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SseUpstream {
            addr,
            permits,
            requests,
            closed,
            closed_notify,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the next event go out.
    pub fn release(&self) {
        self.permits.add_permits(1);
    }

    /// The headers of every request received, in order.
    pub fn requests(&self) -> Vec<Headers> {
        lock(&self.requests).clone()
    }

    /// How many event streams were dropped by the peer (the gateway) so far.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` event streams were dropped (no deadline: bound it in the test).
    pub async fn wait_closed(&self, n: usize) {
        loop {
            let notified = self.closed_notify.notified();
            if self.closed() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn event_stream(permits: Arc<Semaphore>, counter: CloseCounter) -> Response {
    let events = futures_util::stream::unfold((1u64, permits, counter), |(n, p, c)| async move {
        if n > 1 {
            p.acquire().await.ok()?.forget();
        }
        let event = Bytes::from(format!("id: {n}\nevent: tick\ndata: event {n}\n\n"));
        Some((Ok::<_, std::convert::Infallible>(event), (n + 1, p, c)))
    });
    let mut r = Response::new(Body::from_stream(events));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// How one WebSocket connection to [`WsUpstream`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEnd {
    /// Still open.
    Open,
    /// A close frame arrived with this code (1005 when it had none).
    Closed(u16),
    /// The connection dropped without a close frame.
    Dropped,
}

/// A recording WebSocket echo server.
#[derive(Debug)]
pub struct WsUpstream {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Headers>>>,
    ends: Arc<Mutex<Vec<WsEnd>>>,
    changed: Arc<Notify>,
    server: JoinHandle<()>,
}

impl WsUpstream {
    /// Binds a free loopback port and serves until dropped.
    pub async fn start() -> anyhow::Result<WsUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind WebSocket upstream")?;
        let addr = listener.local_addr()?;
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let ends = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let (h, e, c) = (
            Arc::clone(&handshakes),
            Arc::clone(&ends),
            Arc::clone(&changed),
        );
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (h, e, c) = (Arc::clone(&h), Arc::clone(&e), Arc::clone(&c));
                conns.spawn(serve_ws(stream, h, e, c));
            }
        });
        Ok(WsUpstream {
            addr,
            handshakes,
            ends,
            changed,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (for a gateway route's `upstream`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The headers of every completed handshake, in order (names lowercase).
    pub fn handshakes(&self) -> Vec<Headers> {
        lock(&self.handshakes).clone()
    }

    /// How each connection ended, in handshake order.
    pub fn ends(&self) -> Vec<WsEnd> {
        lock(&self.ends).clone()
    }

    /// Waits until connection `i` is no longer open and returns how it ended (no deadline:
    /// bound it in the test).
    pub async fn wait_end(&self, i: usize) -> WsEnd {
        loop {
            let notified = self.changed.notified();
            if let Some(end) = self.ends().get(i).filter(|e| **e != WsEnd::Open) {
                return end.clone();
            }
            notified.await;
        }
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_ws(
    stream: tokio::net::TcpStream,
    handshakes: Arc<Mutex<Vec<Headers>>>,
    ends: Arc<Mutex<Vec<WsEnd>>>,
    changed: Arc<Notify>,
) {
    let mut recorded = None;
    // The callback's signature (an `http::Response` as the error) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &WsRequest, mut resp: WsResponse| {
        recorded = Some(headers_of(req.headers()));
        let offers_chat = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "chat.v2");
        if offers_chat {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("chat.v2"),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let index = {
        let mut h = lock(&handshakes);
        h.push(recorded.unwrap_or_default());
        lock(&ends).push(WsEnd::Open);
        h.len() - 1
    };
    changed.notify_waiters();
    let end = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if ws
                    .send(Message::Text(format!("echo:{}", t.as_str()).into()))
                    .await
                    .is_err()
                {
                    break WsEnd::Dropped;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                break WsEnd::Closed(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break WsEnd::Dropped,
        }
    };
    // Finish the closing handshake (tungstenite queued the reply).
    let _ = ws.flush().await;
    if let Some(e) = lock(&ends).get_mut(index) {
        *e = end;
    }
    changed.notify_waiters();
}
