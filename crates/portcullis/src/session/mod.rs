//! Server-side sessions: create, load, save and destroy sealed records through any store.
//!
//! Lifetimes: the absolute lifetime is in the (sealed) record; the idle timeout is the store TTL,
//! pushed forward on activity. The push is throttled with the TTL the store reports, so a busy
//! session costs no write per request.

pub mod cookie;
pub mod layer;
mod record;
pub mod refresh;
pub mod ticket;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
pub use record::SessionRecord;
use ticket::{Namespace, Ticket};

use crate::{
    crypto::{
        keyring::KeyRing,
        seal::{self, Purpose, SealError},
    },
    oidc::now_unix,
    store::{SessionStore, StoreError, StoreKey},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealing failed: {0}")]
    Seal(#[from] SealError),
    #[error("session record could not be encoded: {0}")]
    Encode(String),
}

/// A loaded session: its ticket (to re-seal), store key and record.
#[derive(Debug)]
pub struct Session {
    pub ticket: Ticket,
    pub key: StoreKey,
    pub record: SessionRecord,
}

#[derive(Debug, Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    keys: KeyRing,
    pub absolute_lifetime: Duration,
    pub idle_timeout: Duration,
}

impl SessionManager {
    pub fn new(store: Arc<dyn SessionStore>, keys: KeyRing, absolute_lifetime: Duration, idle_timeout: Duration) -> Self {
        SessionManager {
            store,
            keys,
            absolute_lifetime,
            idle_timeout,
        }
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Stores a new session under a fresh ticket (a new id on every login: no fixation).
    pub async fn create(&self, record: SessionRecord) -> Result<Session, SessionError> {
        let ticket = Ticket::generate().map_err(|_| SealError::Random)?;
        let key = ticket.store_key(Namespace::Session);
        let session = Session { ticket, key, record };
        self.save(&session).await?;
        Ok(session)
    }

    /// Loads the session a cookie ticket names. `None` when absent, expired, forged or sealed
    /// under a retired key. Store failures are errors: the caller refuses the request.
    pub async fn load(&self, ticket: Ticket) -> Result<Option<Session>, SessionError> {
        let key = ticket.store_key(Namespace::Session);
        let Some(entry) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let record: SessionRecord = match seal::open(&self.keys, Purpose::Session, ticket.secret(), key.0.as_bytes(), &entry.value)
            .map_err(|e| e.to_string())
            .and_then(|plain| serde_json::from_slice(&plain).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(store_key = ?key, %why, "dropping a session record that does not open");
                self.store.delete(&key).await?;
                return Ok(None);
            }
        };
        let now = now_unix();
        if record.absolute_expires_at <= now {
            self.store.delete(&key).await?;
            return Ok(None);
        }
        let wanted = self.ttl_for(&record, now);
        // Touch only once the TTL has run down by a tenth of the idle timeout (at most a minute).
        let slack = (self.idle_timeout / 10).min(Duration::from_secs(60));
        if wanted > entry.ttl + slack {
            self.store.touch(&key, wanted).await?;
        }
        Ok(Some(Session { ticket, key, record }))
    }

    /// Re-reads a session (after waiting for a lock, another task may have changed it).
    pub async fn reload(&self, session: &Session) -> Result<Option<Session>, SessionError> {
        let ticket = Ticket::parse(&session.ticket.encode()).ok_or(SealError::Malformed)?;
        self.load(ticket).await
    }

    pub async fn save(&self, session: &Session) -> Result<(), SessionError> {
        let plain = Zeroizing::new(serde_json::to_vec(&session.record).map_err(|e| SessionError::Encode(e.to_string()))?);
        let sealed = seal::seal(&self.keys, Purpose::Session, session.ticket.secret(), session.key.0.as_bytes(), &plain)?;
        let ttl = self.ttl_for(&session.record, now_unix());
        self.store.set(&session.key, Bytes::from(sealed), ttl).await?;
        Ok(())
    }

    pub async fn destroy(&self, key: &StoreKey) -> Result<(), SessionError> {
        self.store.delete(key).await?;
        Ok(())
    }

    /// min(idle timeout, time left of the absolute lifetime).
    fn ttl_for(&self, record: &SessionRecord, now: u64) -> Duration {
        let left = Duration::from_secs(record.absolute_expires_at.saturating_sub(now));
        left.min(self.idle_timeout).max(Duration::from_secs(1))
    }
}

use zeroize::Zeroizing;
