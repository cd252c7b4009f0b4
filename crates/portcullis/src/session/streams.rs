//! The live long-lived streams (proxied WebSockets, Server-Sent Events) of each session, so that
//! ending a session also ends its streams, which would otherwise outlive it by hours.
//!
//! Two paths close a stream:
//! - this process ends the session (logout, back-channel logout, operator revocation, failed
//!   refresh): [`super::SessionManager`] notifies [`Streams`] at once;
//! - anything else (a logout on another instance sharing Redis, the CLI, idle expiry in the
//!   store): each stream's watcher re-reads its store key every `session.stream_recheck_interval`
//!   and ends the stream when the session is gone. The absolute lifetime ends it on time.
//!
//! [`Streams::close_all`] closes everything with "going away" for a graceful shutdown.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    oidc::now_unix,
    store::{SessionStore, StoreKey},
};

/// Why a stream is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Logout, revocation or expiry: WebSocket close code 1008 (policy violation).
    SessionEnded,
    /// The store cannot confirm the session (fail closed): close code 1013 (try again later).
    StoreUnavailable,
    /// The gateway is shutting down: close code 1001 (going away).
    Shutdown,
}

type Senders = HashMap<StoreKey, HashMap<u64, watch::Sender<Option<EndReason>>>>;

/// The registry: cheap to clone, shared by everything that ends sessions.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    live: Mutex<Senders>,
}

impl Streams {
    fn live(&self) -> MutexGuard<'_, Senders> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a stream of the session stored under `key` and starts its watcher (store
    /// re-check every `recheck`, absolute expiry at `absolute_expires_at`, Unix seconds).
    /// Dropping the handle unregisters the stream and stops the watcher.
    pub fn open(
        &self,
        store: Arc<dyn SessionStore>,
        key: StoreKey,
        absolute_expires_at: u64,
        recheck: Duration,
    ) -> StreamHandle {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.live()
            .entry(key.clone())
            .or_default()
            .insert(id, tx.clone());
        let watcher = tokio::spawn(watch_session(
            store,
            key.clone(),
            absolute_expires_at,
            recheck,
            tx,
        ));
        StreamHandle {
            streams: self.clone(),
            key,
            id,
            rx,
            watcher,
        }
    }

    /// Ends every stream of one session (called after the session is deleted).
    pub fn end_session(&self, key: &StoreKey) {
        if let Some(streams) = self.live().get(key) {
            for tx in streams.values() {
                tx.send_replace(Some(EndReason::SessionEnded));
            }
        }
    }

    /// Ends every stream of every session (all sessions were revoked).
    pub fn end_all_sessions(&self) {
        self.signal_all(EndReason::SessionEnded);
    }

    /// Closes every stream with "going away" (WebSocket close code 1001; SSE bodies end). For a
    /// graceful shutdown: upgraded connections are no longer tracked by the HTTP server, so
    /// call this when shutdown starts. Returns how many streams were told to close.
    pub fn close_all(&self) -> usize {
        self.signal_all(EndReason::Shutdown)
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.live().values().map(HashMap::len).sum()
    }

    fn signal_all(&self, reason: EndReason) -> usize {
        let live = self.live();
        let mut n = 0;
        for tx in live.values().flat_map(HashMap::values) {
            tx.send_replace(Some(reason));
            n += 1;
        }
        n
    }

    fn remove(&self, key: &StoreKey, id: u64) {
        let mut live = self.live();
        if let Some(streams) = live.get_mut(key) {
            streams.remove(&id);
            if streams.is_empty() {
                live.remove(key);
            }
        }
    }
}

/// One registered stream. [`StreamHandle::ended`] resolves when it must close.
#[derive(Debug)]
pub struct StreamHandle {
    streams: Streams,
    key: StoreKey,
    id: u64,
    rx: watch::Receiver<Option<EndReason>>,
    watcher: JoinHandle<()>,
}

impl StreamHandle {
    /// Waits until the stream must end. Cancel-safe: use it as a `select!` branch in a loop.
    pub async fn ended(&mut self) -> EndReason {
        match self.rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or(EndReason::SessionEnded),
            // The registry side is gone: nothing vouches for the session any more.
            Err(_) => EndReason::SessionEnded,
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.watcher.abort();
        self.streams.remove(&self.key, self.id);
    }
}

/// Re-reads the session's store entry on an interval (a read that does not push the idle TTL:
/// stream traffic alone does not keep a session alive) and watches the absolute expiry.
async fn watch_session(
    store: Arc<dyn SessionStore>,
    key: StoreKey,
    absolute_expires_at: u64,
    recheck: Duration,
    tx: watch::Sender<Option<EndReason>>,
) {
    let lifetime_left = Duration::from_secs(absolute_expires_at.saturating_sub(now_unix()));
    let expiry = tokio::time::sleep(lifetime_left);
    tokio::pin!(expiry);
    // The first check is at once: a logout between the request's session check and this
    // registration (while the upstream prepared its response head or its `101`) found no stream
    // to end, and must not leave this one open until the first re-check.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now(), recheck);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            () = &mut expiry => break EndReason::SessionEnded,
            _ = tick.tick() => match store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => break EndReason::SessionEnded,
                Err(e) => {
                    tracing::warn!(error = %e, "stream re-check: store unavailable, closing");
                    break EndReason::StoreUnavailable;
                }
            },
            () = tx.closed() => return,
        }
    };
    tx.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(reason);
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn key(s: &str) -> StoreKey {
        StoreKey(s.into())
    }

    #[tokio::test]
    async fn ending_a_session_ends_only_its_streams() {
        let streams = Streams::default();
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let far = now_unix() + 3600;
        let hour = Duration::from_secs(3600);
        let mut a = streams.open(Arc::clone(&store), key("s:a"), far, hour);
        let b = streams.open(Arc::clone(&store), key("s:b"), far, hour);
        assert_eq!(streams.count(), 2);
        streams.end_session(&key("s:a"));
        assert_eq!(a.ended().await, EndReason::SessionEnded);
        assert!(b.rx.borrow().is_none());
        drop(a);
        assert_eq!(streams.count(), 1);
        assert_eq!(streams.close_all(), 1);
        drop(b);
        assert_eq!(streams.count(), 0);
    }

    #[tokio::test]
    async fn the_recheck_ends_a_stream_whose_session_is_gone() {
        let streams = Streams::default();
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        // Nothing stored under the key: the first re-check finds the session gone.
        let mut s = streams.open(
            store,
            key("s:gone"),
            now_unix() + 3600,
            Duration::from_millis(10),
        );
        assert_eq!(s.ended().await, EndReason::SessionEnded);
    }

    /// A session ended before its stream was registered (the logout raced the upstream's
    /// response head): the stream ends at once, not at the first re-check an hour later.
    #[tokio::test(start_paused = true)]
    async fn a_stream_opened_after_its_session_ended_ends_at_once() {
        let streams = Streams::default();
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let hour = Duration::from_secs(3600);
        let mut s = streams.open(store, key("s:ended"), now_unix() + 7200, hour);
        let ended = tokio::time::timeout(hour / 2, s.ended())
            .await
            .expect("ended before any re-check");
        assert_eq!(ended, EndReason::SessionEnded);
    }

    #[tokio::test]
    async fn shutdown_says_going_away() {
        let streams = Streams::default();
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let mut s = streams.open(
            store,
            key("s:x"),
            now_unix() + 3600,
            Duration::from_secs(3600),
        );
        streams.close_all();
        assert_eq!(s.ended().await, EndReason::Shutdown);
    }
}
