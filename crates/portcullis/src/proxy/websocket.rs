//! WebSocket upgrades on routes with `websocket = true`.
//!
//! A WebSocket handshake cannot carry `X-CSRF-Token`, so at upgrade time the gateway requires a
//! valid session *and* `Origin` equal to `server.public_origin` (a missing `Origin` is refused:
//! every browser sends one on a WebSocket handshake, and the gateway cannot tell an old or odd
//! client from a cross-site one). The upstream handshake is a new one: the browser's `Cookie`
//! and `Authorization` are dropped, `Authorization: Bearer <access token>` is added, the key is
//! the gateway's own. Subprotocols pass through (the upstream must pick one the browser
//! offered); extensions (`permessage-deflate`) are stripped both ways, because the gateway
//! relays *messages* (it must be able to inject close frames when the session ends) and
//! compressing attacker-influenced data next to secrets invites CRIME-style length leaks.
//!
//! After `101`, [`relay`] copies messages both ways until either side closes or the session
//! ends ([`crate::session::streams`]): then the browser gets close code 1008 (policy), 1013
//! (store unavailable) or 1001 (shutdown).

use axum::{body::Body, extract::Request, response::Response};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use http_body_util::Limited;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::{client::generate_key, derive_accept_key},
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};

use super::{Route, headers};
use crate::{
    AppState,
    http::problem::ApiError,
    session::{
        Session,
        streams::{EndReason, StreamHandle},
    },
};

const SEC_WEBSOCKET_KEY: &str = "sec-websocket-key";
const SEC_WEBSOCKET_ACCEPT: &str = "sec-websocket-accept";
const SEC_WEBSOCKET_VERSION: &str = "sec-websocket-version";
const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
const SEC_WEBSOCKET_EXTENSIONS: &str = "sec-websocket-extensions";
/// Largest message from the upstream (the browser side is bounded by `server.max_request_body`).
const MAX_UPSTREAM_MESSAGE: usize = 16 << 20;

/// Whether a request asks for a protocol switch (the hygiene layer has already refused any
/// `Upgrade` other than `websocket`).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
}

/// A browser handshake that passed [`admit`].
#[derive(Debug)]
pub struct Handshake {
    key: HeaderValue,
    offered_protocols: Vec<String>,
    on_upgrade: OnUpgrade,
}

/// Checks an upgrade request on `route` (the session is already known to exist): the route
/// must allow WebSockets, the handshake must be well-formed, `Origin` must be ours.
pub fn admit(route: &Route, req: &mut Request, public_origin: &str) -> Result<Handshake, ApiError> {
    if !route.cfg.websocket {
        tracing::info!(route = %route.cfg.prefix, "upgrade refused: route has no websocket = true");
        return Err(ApiError::BadRequest("upgrade not allowed on this route"));
    }
    let h = req.headers();
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_ws = h
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let version_13 = h
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = h.get(SEC_WEBSOCKET_KEY).filter(|k| k.len() == 24).cloned();
    let (true, true, true, true, Some(key)) = (
        req.method() == Method::GET && req.version() == http::Version::HTTP_11,
        connection_upgrade,
        upgrade_ws,
        version_13,
        key,
    ) else {
        return Err(ApiError::BadRequest("malformed WebSocket handshake"));
    };
    // Exactly one `Origin`, ours (as the CSRF layer requires of unsafe requests).
    let mut origins = h.get_all(header::ORIGIN).iter();
    match (origins.next().map(HeaderValue::as_bytes), origins.next()) {
        (Some(o), None) if o == public_origin.as_bytes() => {}
        (other, _) => {
            tracing::warn!(
                origin = ?other.map(String::from_utf8_lossy),
                "WebSocket upgrade refused: Origin is not the public origin"
            );
            return Err(ApiError::CrossOrigin);
        }
    }
    let offered_protocols = h
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ApiError::BadRequest("connection cannot be upgraded"))?;
    Ok(Handshake {
        key,
        offered_protocols,
        on_upgrade,
    })
}

/// Performs the upstream handshake with the already rewritten request head (bearer token set,
/// browser credentials and hop-by-hop headers gone) and, on `101`, answers the browser with
/// `101` and starts relaying. A non-`101` upstream answer is passed on as a normal response.
pub async fn connect(
    state: &AppState,
    route: &Route,
    session: &Session,
    hs: Handshake,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let Some(client) = route.ws_client.as_ref() else {
        return Err(ApiError::Internal);
    };
    let our_key = generate_key();
    let h = &mut parts.headers;
    h.remove(SEC_WEBSOCKET_EXTENSIONS);
    h.remove(SEC_WEBSOCKET_ACCEPT);
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    h.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&our_key).map_err(|_| ApiError::Internal)?,
    );
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::CONTENT_TYPE);
    let req = http::Request::from_parts(parts, Limited::new(Body::empty(), 0));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(route.cfg.timeout, client.request(req)).await;
    state.metrics.upstream(started.elapsed());
    let mut resp = match sent {
        Err(_) => {
            tracing::warn!(route = %route.cfg.prefix, "upstream WebSocket handshake timed out");
            state.metrics.upstream_error(&route.cfg.prefix, "timeout");
            return Err(ApiError::GatewayTimeout);
        }
        Ok(Err(e)) => return Err(super::classify(state, &route.cfg, &e, e.is_connect())),
        Ok(Ok(r)) => r,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::info!(route = %route.cfg.prefix, status = %resp.status(), "upstream declined the WebSocket handshake");
        let (mut parts, body) = resp.into_parts();
        headers::downstream_response(&mut parts.headers);
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let protocol = check_upstream_101(resp.headers(), &our_key, &hs.offered_protocols)
        .inspect_err(|why| {
            tracing::warn!(route = %route.cfg.prefix, why, "upstream WebSocket handshake rejected");
        })
        .map_err(|_| ApiError::BadGateway)?;
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    // Registered before the browser sees 101: a logout racing the handshake still closes it.
    let handle = state.sessions.streams().open(
        std::sync::Arc::clone(state.sessions.store()),
        session.key.clone(),
        session.record.absolute_expires_at,
        state.config.session.stream_recheck_interval,
    );
    let browser_limit = usize::try_from(state.config.server.max_request_body)
        .unwrap_or(usize::MAX)
        .max(1024);
    let prefix = route.cfg.prefix.clone();
    tokio::spawn(async move {
        let (browser, upstream) = match tokio::join!(hs.on_upgrade, upstream_upgrade) {
            (Ok(b), Ok(u)) => (b, u),
            (b, u) => {
                tracing::info!(route = %prefix, browser_ok = b.is_ok(), upstream_ok = u.is_ok(), "WebSocket upgrade did not complete");
                return;
            }
        };
        let limits = |n: usize| {
            WebSocketConfig::default()
                .max_message_size(Some(n))
                .max_frame_size(Some(n))
        };
        let browser = WebSocketStream::from_raw_socket(
            TokioIo::new(browser),
            Role::Server,
            Some(limits(browser_limit)),
        )
        .await;
        let upstream = WebSocketStream::from_raw_socket(
            TokioIo::new(upstream),
            Role::Client,
            Some(limits(MAX_UPSTREAM_MESSAGE)),
        )
        .await;
        relay(browser, upstream, handle, &prefix).await;
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(hs.key.as_bytes()))
            .map_err(|_| ApiError::Internal)?,
    );
    if let Some(p) = protocol {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&p).map_err(|_| ApiError::Internal)?,
        );
    }
    Ok(out)
}

/// Validates the upstream's `101`: the accept key answers our key, no extension was negotiated
/// (none was offered), and the chosen subprotocol (if any) is one the browser offered.
fn check_upstream_101(
    h: &HeaderMap,
    our_key: &str,
    offered: &[String],
) -> Result<Option<String>, &'static str> {
    let expected = derive_accept_key(our_key.as_bytes());
    if h.get(SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
        return Err("bad Sec-WebSocket-Accept");
    }
    if !h
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return Err("101 without Upgrade: websocket");
    }
    if h.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        return Err("extension negotiated that was not offered");
    }
    match h.get(SEC_WEBSOCKET_PROTOCOL).map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(p)) if offered.iter().any(|o| o == p) => Ok(Some(p.to_owned())),
        Some(_) => Err("subprotocol the browser did not offer"),
    }
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Copies data messages both ways (each side answers its own pings) until a side closes, a
/// side fails, or the session ends.
async fn relay(mut browser: Socket, mut upstream: Socket, mut handle: StreamHandle, route: &str) {
    let end = loop {
        tokio::select! {
            m = browser.next() => match m {
                Some(Ok(Message::Close(frame))) => {
                    let _ = upstream.close(frame).await;
                    break "browser closed";
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if upstream.send(m).await.is_err() {
                        let _ = browser.close(Some(close(CloseCode::Error, "upstream failed"))).await;
                        break "upstream write failed";
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = upstream.close(Some(close(CloseCode::Away, ""))).await;
                    break "browser gone";
                }
            },
            m = upstream.next() => match m {
                Some(Ok(Message::Close(frame))) => {
                    let _ = browser.close(frame).await;
                    break "upstream closed";
                }
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if browser.send(m).await.is_err() {
                        let _ = upstream.close(Some(close(CloseCode::Away, ""))).await;
                        break "browser write failed";
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = browser.close(Some(close(CloseCode::Error, "upstream failed"))).await;
                    break "upstream gone";
                }
            },
            reason = handle.ended() => {
                let (code, text) = match reason {
                    EndReason::SessionEnded => (CloseCode::Policy, "session ended"),
                    EndReason::StoreUnavailable => (CloseCode::Again, "try again later"),
                    EndReason::Shutdown => (CloseCode::Away, "going away"),
                };
                let _ = browser.close(Some(close(code, text))).await;
                let _ = upstream.close(Some(close(CloseCode::Away, ""))).await;
                break text;
            }
        }
    };
    drop(handle);
    tracing::debug!(route, end, "WebSocket relay ended");
    // Let both closing handshakes finish (or give up after a grace period).
    let drain = async {
        tokio::join!(async { while browser.next().await.is_some() {} }, async {
            while upstream.next().await.is_some() {}
        })
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_101_is_checked() {
        let key = generate_key();
        let ok = |extra: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("hv"),
            );
            for (k, v) in extra {
                h.insert(*k, HeaderValue::from_str(v).expect("hv"));
            }
            check_upstream_101(&h, &key, &["chat.v2".to_owned()])
        };
        assert_eq!(ok(&[]), Ok(None));
        assert_eq!(
            ok(&[(SEC_WEBSOCKET_PROTOCOL, "chat.v2")]),
            Ok(Some("chat.v2".to_owned()))
        );
        assert!(ok(&[(SEC_WEBSOCKET_PROTOCOL, "other")]).is_err());
        assert!(ok(&[(SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate")]).is_err());
        assert!(ok(&[(SEC_WEBSOCKET_ACCEPT, "bogus")]).is_err());
    }
}
