//! [`RecordingUpstream`]: a real HTTP/1.1 server on 127.0.0.1 that records
//! every request it receives and answers according to the path:
//!
//! | path ends with | answer |
//! |---|---|
//! | anything else | 200 `{"ok":true,"path":"<path>","method":"<m>"}` |
//! | `/slow` | the same after sleeping [`SLOW_DELAY`] (5 s) |
//! | `/big` | 200 with a body of [`BIG_BODY_LEN`] bytes (1 MiB, `application/octet-stream`) |
//! | `/echo-body` | 200 with the request body (and its `Content-Type`) |
//! | `/status/NNN` | status NNN (100 < NNN < 600) with the JSON body |
//!
//! Every answer carries `Set-Cookie: upstream=1`, `Service-Worker-Allowed: /`,
//! `Clear-Site-Data: "*"` and `X-Upstream: yes`, so tests can check what the
//! gateway passes back to the browser. The request
//! is recorded before the answer is produced (a `/slow` request is recorded
//! even when the gateway gives up on it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tokio::sync::{Notify, oneshot};

/// How long `/slow` waits before answering.
pub const SLOW_DELAY: Duration = Duration::from_secs(5);
/// The size of the `/big` body.
pub const BIG_BODY_LEN: usize = 1024 * 1024;
/// The largest request body recorded (bigger ones are answered 413).
pub const MAX_RECORDED_BODY: usize = 64 * 1024 * 1024;

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// The request target as received: path and query (`/a/b?x=1`).
    pub path_and_query: String,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Every header in the order hyper delivers them (names lowercase),
    /// duplicates kept as separate entries.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `true` if header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Notify,
    slow_delay: Mutex<Duration>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The recording upstream. Stops accepting connections when dropped.
#[derive(Debug)]
pub struct RecordingUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RecordingUpstream {
    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// If no loopback port can be bound (the test cannot go on anyway).
    pub async fn start() -> RecordingUpstream {
        Self::try_start()
            .await
            .expect("starting the recording upstream on 127.0.0.1")
    }

    /// Like [`start`](Self::start), returning errors.
    pub async fn try_start() -> anyhow::Result<RecordingUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        Self::serve(listener)
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<RecordingUpstream> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            slow_delay: Mutex::new(SLOW_DELAY),
            ..Shared::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let tx = crate::spawn_router(listener, app, "upstream");
        Ok(RecordingUpstream {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how long `/slow` sleeps (default [`SLOW_DELAY`]).
    pub fn set_slow_delay(&self, delay: Duration) {
        *self
            .shared
            .slow_delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delay;
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().clone()
    }

    /// The last request recorded.
    pub fn last(&self) -> Option<RecordedRequest> {
        self.shared.lock().last().cloned()
    }

    /// Number of requests recorded.
    pub fn count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.lock().clear();
    }

    /// Waits until at least `n` requests have been recorded; returns the
    /// count, or an error after `timeout`.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> anyhow::Result<usize> {
        let wait = async {
            loop {
                let notified = self.shared.arrived.notified();
                let count = self.count();
                if count >= n {
                    return count;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.with_context(|| {
            format!(
                "upstream saw {} request(s) within {timeout:?}, expected {n}",
                self.count()
            )
        })
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_RECORDED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "application/json",
                Bytes::from(serde_json::json!({"ok": false, "error": e.to_string()}).to_string()),
            );
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let path = parts.uri.path().to_owned();
    let method = parts.method.as_str().to_owned();
    let recorded = RecordedRequest {
        method: method.clone(),
        path_and_query,
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    };
    shared.lock().push(recorded);
    shared.arrived.notify_waiters();

    let json_body =
        || Bytes::from(serde_json::json!({"ok": true, "path": path, "method": method}).to_string());

    if path.ends_with("/slow") {
        let delay = *shared
            .slow_delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::time::sleep(delay).await;
        return respond(StatusCode::OK, "application/json", json_body());
    }
    if path.ends_with("/big") {
        return respond(
            StatusCode::OK,
            "application/octet-stream",
            Bytes::from(vec![b'x'; BIG_BODY_LEN]),
        );
    }
    if path.ends_with("/echo-body") {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        return respond(StatusCode::OK, &ct, body);
    }
    if let Some(code) = status_suffix(&path) {
        let body = if code.is_informational()
            || code == StatusCode::NO_CONTENT
            || code == StatusCode::NOT_MODIFIED
        {
            Bytes::new()
        } else {
            json_body()
        };
        return respond(code, "application/json", body);
    }
    respond(StatusCode::OK, "application/json", json_body())
}

/// `.../status/NNN` → NNN when it is a valid final status (200-599).
fn status_suffix(path: &str) -> Option<StatusCode> {
    let (rest, code) = path.rsplit_once('/')?;
    if !rest.ends_with("/status") && rest != "/status" && rest != "status" {
        return None;
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u16 = code.parse().ok()?;
    if !(200..=599).contains(&n) {
        return None;
    }
    StatusCode::from_u16(n).ok()
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(header::SET_COOKIE, HeaderValue::from_static("upstream=1"));
    h.insert("service-worker-allowed", HeaderValue::from_static("/"));
    h.insert("clear-site-data", HeaderValue::from_static("\"*\""));
    // A careless CORS set-up that trusts a sibling origin with credentials.
    h.insert(
        "access-control-allow-origin",
        HeaderValue::from_static("https://sibling.example.com"),
    );
    h.insert(
        "access-control-allow-credentials",
        HeaderValue::from_static("true"),
    );
    h.insert("x-upstream", HeaderValue::from_static("yes"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paths() {
        assert_eq!(status_suffix("/status/418"), Some(StatusCode::IM_A_TEAPOT));
        assert_eq!(
            status_suffix("/api/x/status/503"),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(status_suffix("/api/x/status/99"), None);
        assert_eq!(status_suffix("/api/x/status/abc"), None);
        assert_eq!(status_suffix("/api/xstatus/418"), None);
        assert_eq!(status_suffix("/api/x/418"), None);
    }
}
