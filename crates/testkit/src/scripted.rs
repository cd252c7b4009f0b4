//! [`ScriptedUpstream`]: a real HTTP/1.1 server on 127.0.0.1 whose answers the test scripts per
//! path ([`Reply`]): JSON or raw bodies, fixed delays, answers held until another path's request
//! has arrived (to prove concurrency without timing assertions), and requests that never get an
//! answer. Every request is recorded (as [`RecordedRequest`]) before the answer is produced;
//! unscripted paths get 404 JSON.

use std::collections::HashMap;
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

use crate::upstream::RecordedRequest;

/// How the upstream answers one path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `application/json` with this status and body.
    Json(u16, serde_json::Value),
    /// Any status, content type and body.
    Raw {
        status: u16,
        content_type: String,
        body: Bytes,
    },
    /// The inner reply after sleeping this long.
    Delayed(Duration, Box<Reply>),
    /// The inner reply once a request for `path` has arrived (before or after this one) at this
    /// upstream or at one started with [`ScriptedUpstream::start_sharing`] from it.
    AfterArrivalOf(String, Box<Reply>),
    /// Never answers (the connection stays open until the client gives up).
    Hang,
}

impl Reply {
    /// 200 `application/json`.
    pub fn ok(body: serde_json::Value) -> Reply {
        Reply::Json(200, body)
    }

    /// This reply after `delay`.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }

    /// This reply once a request for `path` has arrived.
    pub fn after_arrival_of(self, path: &str) -> Reply {
        Reply::AfterArrivalOf(path.to_owned(), Box::new(self))
    }
}

#[derive(Debug, Default)]
struct Shared {
    replies: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    arrivals: Arc<Arrivals>,
}

/// Paths that have arrived, shared by a group of upstreams (for [`Reply::AfterArrivalOf`]).
#[derive(Debug, Default)]
struct Arrivals {
    paths: Mutex<Vec<String>>,
    notify: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The scripted upstream. Stops accepting connections when dropped.
#[derive(Debug)]
pub struct ScriptedUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ScriptedUpstream {
    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> ScriptedUpstream {
        Self::try_start()
            .await
            .expect("starting the scripted upstream on 127.0.0.1")
    }

    /// Like [`start`](Self::start), returning errors.
    pub async fn try_start() -> anyhow::Result<ScriptedUpstream> {
        Self::start_with(Arc::default()).await
    }

    /// Another upstream (own port, own script and records) whose arrivals count for
    /// [`Reply::AfterArrivalOf`] on `peer` and the other way round: a handshake across servers.
    pub async fn start_sharing(peer: &ScriptedUpstream) -> ScriptedUpstream {
        Self::start_with(Arc::clone(&peer.shared.arrivals))
            .await
            .expect("starting the scripted upstream on 127.0.0.1")
    }

    async fn start_with(arrivals: Arc<Arrivals>) -> anyhow::Result<ScriptedUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            arrivals,
            ..Shared::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let tx = crate::spawn_router(listener, app, "scripted upstream");
        Ok(ScriptedUpstream {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts the answer for requests whose path (without the query) is `path`.
    pub fn on(&self, path: &str, reply: Reply) {
        lock(&self.shared.replies).insert(path.to_owned(), reply);
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Number of requests recorded.
    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Requests recorded for `path` (without the query).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    lock(&shared.requests).push(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.clone(), |pq| pq.as_str().to_owned()),
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
        body,
    });
    lock(&shared.arrivals.paths).push(path.clone());
    shared.arrivals.notify.notify_waiters();
    let reply = lock(&shared.replies).get(&path).cloned();
    match reply {
        Some(r) => answer(&shared, r).await,
        None => respond(
            404,
            "application/json",
            Bytes::from_static(br#"{"error":"not scripted"}"#),
        ),
    }
}

async fn answer(shared: &Shared, mut reply: Reply) -> Response {
    loop {
        match reply {
            Reply::Json(status, v) => {
                return respond(status, "application/json", Bytes::from(v.to_string()));
            }
            Reply::Raw {
                status,
                content_type,
                body,
            } => return respond(status, &content_type, body),
            Reply::Delayed(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::AfterArrivalOf(path, inner) => {
                loop {
                    let notified = shared.arrivals.notify.notified();
                    if lock(&shared.arrivals.paths).contains(&path) {
                        break;
                    }
                    notified.await;
                }
                reply = *inner;
            }
            Reply::Hang => std::future::pending::<()>().await,
        }
    }
}

fn respond(status: u16, content_type: &str, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}
