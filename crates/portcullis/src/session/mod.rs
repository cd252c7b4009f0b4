//! Server-side sessions: create, load, save and destroy sealed records through any store.
//!
//! Lifetimes: the absolute lifetime is in the (sealed) record; the idle timeout is the store TTL,
//! pushed forward on activity. The push is throttled with the TTL the store reports, so a busy
//! session costs no write per request.

pub mod cookie;
pub mod layer;
mod open_cache;
mod record;
pub mod refresh;
pub mod streams;
pub mod ticket;

use std::{sync::Arc, time::Duration};

use open_cache::{OpenCache, Opened};

use bytes::Bytes;
pub use record::SessionRecord;
use ticket::{Namespace, Ticket};

use crate::{
    crypto::{
        keyring::KeyRing,
        seal::{self, Purpose, SealError},
    },
    oidc::now_unix,
    store::{IndexKey, SessionStore, StoreError, StoreKey},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealing failed: {0}")]
    Seal(#[from] SealError),
}

/// A loaded session: its ticket (to re-seal), store key and record (shared with the memo of
/// opened records; `Arc::make_mut` before changing it).
#[derive(Debug)]
pub struct Session {
    pub ticket: Ticket,
    pub key: StoreKey,
    pub record: Arc<SessionRecord>,
}

/// Default size of the memo of opened records (`session.open_cache_entries`).
pub const DEFAULT_OPEN_CACHE_ENTRIES: usize = 1024;

#[derive(Debug, Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    pub absolute_lifetime: Duration,
    pub idle_timeout: Duration,
    /// Live WebSocket/SSE streams per session: every way of ending a session here closes them.
    streams: streams::Streams,
    /// Records already opened, by ticket (see [`open_cache`]).
    opened: Arc<OpenCache>,
}

impl SessionManager {
    pub fn new(
        store: Arc<dyn SessionStore>,
        keys: KeyRing,
        absolute_lifetime: Duration,
        idle_timeout: Duration,
    ) -> Self {
        SessionManager {
            store,
            keys,
            absolute_lifetime,
            idle_timeout,
            streams: streams::Streams::default(),
            opened: OpenCache::shared(DEFAULT_OPEN_CACHE_ENTRIES),
        }
    }

    /// Sizes the memo of opened records (0 turns it off).
    #[must_use]
    pub fn with_open_cache(mut self, entries: usize) -> Self {
        self.opened = OpenCache::shared(entries);
        self
    }

    /// The registry of live streams (see [`streams`]).
    pub fn streams(&self) -> &streams::Streams {
        &self.streams
    }

    /// Uses an existing registry (a config reload keeps the running one, so a logout handled
    /// after the reload still closes streams opened before it at once).
    #[must_use]
    pub fn with_streams(mut self, streams: streams::Streams) -> Self {
        self.streams = streams;
        self
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Stores a new session under a fresh ticket (a new id on every login: no fixation), and
    /// indexes it by subject and provider session id.
    pub async fn create(&self, record: SessionRecord) -> Result<Session, SessionError> {
        let ticket = Ticket::generate().map_err(|_| SealError::Random)?;
        let key = ticket.store_key(Namespace::Session);
        let session = Session {
            ticket,
            key,
            record: Arc::new(record),
        };
        self.save(&session).await?;
        let ttl = Duration::from_secs(
            session
                .record
                .absolute_expires_at
                .saturating_sub(now_unix()),
        );
        for index in index_keys(&session.record) {
            self.store.index_add(&index, &session.key, ttl).await?;
        }
        Ok(session)
    }

    /// Ends every session of a subject (operator revocation, back-channel logout by `sub`), on
    /// every instance sharing the store. Returns how many live sessions were ended.
    pub async fn end_subject(&self, iss: &str, sub: &str) -> Result<usize, SessionError> {
        self.end_index(&subject_index(iss, sub)).await
    }

    /// Ends every session of one provider session (`sid`).
    pub async fn end_provider_session(&self, iss: &str, sid: &str) -> Result<usize, SessionError> {
        self.end_index(&sid_index(iss, sid)).await
    }

    /// Store keys of a subject's sessions (some may have expired since).
    pub async fn sessions_of_subject(
        &self,
        iss: &str,
        sub: &str,
    ) -> Result<Vec<StoreKey>, SessionError> {
        Ok(self.store.index_members(&subject_index(iss, sub)).await?)
    }

    /// How many of a subject's sessions are live.
    pub async fn live_sessions_of_subject(
        &self,
        iss: &str,
        sub: &str,
    ) -> Result<usize, SessionError> {
        let mut n = 0;
        for key in self.store.index_members(&subject_index(iss, sub)).await? {
            if self.store.get(&key).await?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Ends every session in the store (an emergency brake), on every instance sharing it.
    pub async fn end_all(&self) -> Result<usize, SessionError> {
        let n = self
            .store
            .delete_all(ticket::Namespace::Session.prefix())
            .await?;
        self.opened.clear();
        self.streams.end_all_sessions();
        Ok(n)
    }

    async fn end_index(&self, index: &IndexKey) -> Result<usize, SessionError> {
        let mut ended = 0;
        for key in self.store.index_members(index).await? {
            if self.store.get(&key).await?.is_some() {
                ended += 1;
            }
            self.store.delete(&key).await?;
            self.opened.forget(&key);
            self.streams.end_session(&key);
            self.store.index_remove(index, &key).await?;
        }
        Ok(ended)
    }

    /// Loads the session a cookie ticket names. `None` when absent, expired, forged or sealed
    /// under a retired key. Store failures are errors: the caller refuses the request.
    pub async fn load(&self, ticket: Ticket) -> Result<Option<Session>, SessionError> {
        if let Some(known) = self.opened.get(&ticket) {
            // The store is read on every request; the memo only spares re-opening the very same
            // bytes (see `open_cache`).
            let Some(entry) = self.store.get(&known.key).await? else {
                self.opened.forget_ticket(&ticket);
                return Ok(None);
            };
            if entry.value == known.sealed {
                return self.admit(ticket, known.key, known.record, entry.ttl).await;
            }
            let record_key = seal::RecordKey::new(ticket.secret());
            return self.open(ticket, &record_key, known.key, entry).await;
        }
        // One HMAC key set-up for both the store key and the record's key derivation.
        let record_key = seal::RecordKey::new(ticket.secret());
        let key = Ticket::store_key_keyed(&record_key, Namespace::Session);
        let Some(entry) = self.store.get(&key).await? else {
            return Ok(None);
        };
        self.open(ticket, &record_key, key, entry).await
    }

    /// Opens what the store holds under a ticket's key, and remembers it.
    async fn open(
        &self,
        ticket: Ticket,
        record_key: &seal::RecordKey,
        key: StoreKey,
        entry: crate::store::Entry,
    ) -> Result<Option<Session>, SessionError> {
        let record: SessionRecord = match seal::open_json_keyed(
            &self.keys,
            Purpose::Session,
            record_key,
            key.0.as_bytes(),
            &entry.value,
        ) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(store_key = ?key, why = %why, "dropping a session record that does not open");
                self.opened.forget_ticket(&ticket);
                self.store.delete(&key).await?;
                return Ok(None);
            }
        };
        let record = Arc::new(record);
        self.opened.put(
            &ticket,
            Opened {
                key: key.clone(),
                sealed: entry.value,
                record: Arc::clone(&record),
            },
        );
        self.admit(ticket, key, record, entry.ttl).await
    }

    /// The lifetime checks every load ends with: absolute expiry, and the sliding idle timeout.
    async fn admit(
        &self,
        ticket: Ticket,
        key: StoreKey,
        record: Arc<SessionRecord>,
        ttl_left: Duration,
    ) -> Result<Option<Session>, SessionError> {
        let now = now_unix();
        if record.absolute_expires_at <= now {
            self.opened.forget_ticket(&ticket);
            self.store.delete(&key).await?;
            return Ok(None);
        }
        let wanted = self.ttl_for(&record, now);
        // Touch only once the TTL has run down by a tenth of the idle timeout (at most a minute).
        let slack = (self.idle_timeout / 10).min(Duration::from_secs(60));
        if wanted > ttl_left + slack {
            self.store.touch(&key, wanted).await?;
        }
        Ok(Some(Session {
            ticket,
            key,
            record,
        }))
    }

    /// Re-reads a session (after waiting for a lock, another task may have changed it).
    pub async fn reload(&self, session: &Session) -> Result<Option<Session>, SessionError> {
        self.load(session.ticket.clone()).await
    }

    /// Stores a session record, new or not. For a record that exists already, use
    /// [`SessionManager::update`].
    pub async fn save(&self, session: &Session) -> Result<(), SessionError> {
        let (sealed, ttl) = self.sealed(session)?;
        self.store.set(&session.key, sealed, ttl).await?;
        Ok(())
    }

    /// Rewrites an existing session (refreshed tokens) only if it still exists: `false` when a
    /// logout, revocation or back-channel logout deleted it meanwhile, which must win. A plain
    /// `set` here brought an ended session back (and out of the subject index, so a second
    /// revocation could not find it).
    pub async fn update(&self, session: &Session) -> Result<bool, SessionError> {
        let (sealed, ttl) = self.sealed(session)?;
        Ok(self.store.replace(&session.key, sealed, ttl).await?)
    }

    fn sealed(&self, session: &Session) -> Result<(Bytes, Duration), SessionError> {
        let sealed = seal::seal_json(
            &self.keys,
            Purpose::Session,
            session.ticket.secret(),
            session.key.0.as_bytes(),
            &*session.record,
        )?;
        Ok((
            Bytes::from(sealed),
            self.ttl_for(&session.record, now_unix()),
        ))
    }

    pub async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        self.store.delete(key).await?;
        self.opened.forget(key);
        self.streams.end_session(key);
        Ok(())
    }

    /// min(idle timeout, time left of the absolute lifetime).
    fn ttl_for(&self, record: &SessionRecord, now: u64) -> Duration {
        let left = Duration::from_secs(record.absolute_expires_at.saturating_sub(now));
        left.min(self.idle_timeout).max(Duration::from_secs(1))
    }
}

/// Index keys are hashes of (issuer, value): a store dump does not list user ids in clear, and
/// the hash involves no server key, so key rotation never moves an index.
fn index_key(kind: &str, iss: &str, value: &str) -> IndexKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["portcullis/v1/index/", kind, "\0", iss, "\0", value] {
        ctx.update(part.as_bytes());
    }
    IndexKey(format!(
        "x:{kind}:{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ctx.finish()
        )
    ))
}

pub fn subject_index(iss: &str, sub: &str) -> IndexKey {
    index_key("sub", iss, sub)
}

pub fn sid_index(iss: &str, sid: &str) -> IndexKey {
    index_key("sid", iss, sid)
}

fn index_keys(record: &SessionRecord) -> Vec<IndexKey> {
    let mut v = vec![subject_index(&record.iss, &record.sub)];
    if let Some(sid) = &record.sid {
        v.push(sid_index(&record.iss, sid));
    }
    v
}

#[cfg(test)]
pub(crate) mod scenarios;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::MemoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scenarios_on_the_memory_store() {
        super::scenarios::run_all(Arc::new(MemoryStore::new())).await;
    }
}
