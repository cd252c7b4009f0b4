//! Session stores. A store sees only opaque, already-sealed bytes under opaque keys, with a TTL;
//! sealing happens once, above every backend (see `crate::session`).

#[cfg(test)]
mod conformance;
mod file;
mod lease;
mod memory;
mod redis;

use std::{fmt, time::Duration};

use bytes::Bytes;

pub use file::{FileStore, FileStoreError};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A store key: a keyed hash, never the cookie's ticket (see `crate::session::ticket`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey(pub String);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Safe to log: it cannot be turned back into a cookie. Shortened to keep logs readable.
        write!(f, "StoreKey({}…)", &self.0[..self.0.len().min(12)])
    }
}

/// A secondary index (all sessions of one subject, or of one provider session `sid`), so a
/// session set can be found and ended without the cookie. The key is a hash, not the raw value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IndexKey(pub String);

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexKey({}…)", &self.0[..self.0.len().min(12)])
    }
}

/// A value with the time it has left before the store forgets it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Bytes,
    pub ttl: Duration,
}

/// Proof of holding a lock; needed to release it, so a lock that expired and was taken by someone
/// else is never released by the first holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(pub u128);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// The operations every backend offers. Implementations must be safe under concurrent use from
/// many tasks (and, for shared backends, many instances).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError>;
    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError>;
    /// Sets the value only if the key still holds a live one, atomically; `false` if it is gone.
    /// For rewriting an existing record (a refresh) without bringing back one that a logout or
    /// revocation deleted meanwhile.
    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Sets a new TTL without rewriting the value. `false` if the key is gone.
    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError>;
    /// Atomically reads and deletes (single-use records such as login state).
    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError>;
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError>;
    /// Takes a lease-bound lock, or `None` if someone else holds it.
    async fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError>;
    async fn unlock(&self, key: &StoreKey, token: &LockToken) -> Result<(), StoreError>;
    /// Adds `member` to an index; the index lives at least `ttl` from now.
    async fn index_add(
        &self,
        index: &IndexKey,
        member: &StoreKey,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// The members of an index (possibly including sessions that have since expired).
    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError>;
    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError>;
    /// Deletes every record whose key starts with `prefix` (e.g. every session); returns how
    /// many. Rare and operator-driven: it may scan the whole store.
    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError>;
    /// Readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;
}
