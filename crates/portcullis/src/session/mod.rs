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
        let session = Session {
            ticket,
            key,
            record,
        };
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
        let record: SessionRecord = match seal::open_json(
            &self.keys,
            Purpose::Session,
            ticket.secret(),
            key.0.as_bytes(),
            &entry.value,
        ) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(store_key = ?key, why = %why, "dropping a session record that does not open");
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

    pub async fn save(&self, session: &Session) -> Result<(), SessionError> {
        let sealed = seal::seal_json(
            &self.keys,
            Purpose::Session,
            session.ticket.secret(),
            session.key.0.as_bytes(),
            &session.record,
        )?;
        let ttl = self.ttl_for(&session.record, now_unix());
        self.store
            .set(&session.key, Bytes::from(sealed), ttl)
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn manager(absolute: u64, idle_ms: u64) -> SessionManager {
        let keys = KeyRing::parse(&KeyRing::generate_encoded().expect("rng")).expect("keys");
        SessionManager::new(
            Arc::new(MemoryStore::new()),
            keys,
            Duration::from_secs(absolute),
            Duration::from_millis(idle_ms),
        )
    }

    fn record(absolute_in: u64) -> SessionRecord {
        let now = now_unix();
        SessionRecord {
            sub: "alice".into(),
            iss: "https://idp".into(),
            sid: None,
            user: Default::default(),
            csrf_token: "c".into(),
            access_token: "at".into(),
            access_expires_at: None,
            refresh_token: None,
            id_token: None,
            created_at: now,
            absolute_expires_at: now + absolute_in,
        }
    }

    fn reparse(t: &Ticket) -> Ticket {
        Ticket::parse(&t.encode()).expect("ticket")
    }

    #[tokio::test]
    async fn create_load_and_the_store_sees_only_sealed_bytes() {
        let m = manager(3600, 60_000);
        let s = m.create(record(3600)).await.expect("create");
        let raw = m
            .store()
            .get(&s.key)
            .await
            .expect("get")
            .expect("stored")
            .value;
        assert!(
            !raw.windows(5).any(|w| w == b"alice"),
            "plaintext never reaches the store"
        );
        let loaded = m
            .load(reparse(&s.ticket))
            .await
            .expect("load")
            .expect("live");
        assert_eq!(loaded.record.sub, "alice");
        // A different ticket finds nothing.
        assert!(
            m.load(Ticket::generate().expect("rng"))
                .await
                .expect("load")
                .is_none()
        );
    }

    #[tokio::test]
    async fn idle_timeout_ends_an_unused_session() {
        let m = manager(3600, 1000);
        let s = m.create(record(3600)).await.expect("create");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(m.load(reparse(&s.ticket)).await.expect("load").is_none());
    }

    #[tokio::test]
    async fn absolute_lifetime_ends_a_busy_session() {
        let m = manager(3600, 60_000);
        let s = m.create(record(1)).await.expect("create");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(m.load(reparse(&s.ticket)).await.expect("load").is_none());
        assert!(
            m.store().get(&s.key).await.expect("get").is_none(),
            "expired record deleted"
        );
    }

    #[tokio::test]
    async fn a_record_under_a_retired_key_is_dropped() {
        let m = manager(3600, 60_000);
        let s = m.create(record(3600)).await.expect("create");
        let other = SessionManager::new(
            Arc::clone(m.store()),
            KeyRing::parse(&KeyRing::generate_encoded().expect("rng")).expect("keys"),
            m.absolute_lifetime,
            m.idle_timeout,
        );
        assert!(
            other
                .load(reparse(&s.ticket))
                .await
                .expect("load")
                .is_none()
        );
    }
}
