//! The embedded store: a sharded concurrent map in this process. The default for one instance.
//!
//! Expired entries are invisible at once (checked on read) and reclaimed by a background sweep
//! that locks one shard at a time, so there is never a global pause.
//!
//! Layout, for memory per session (docs/performance.md): a key is allocated once, as an
//! `Arc<str>` shared by the value map and every index that lists it, and an index is a plain
//! vector (an index lists the few sessions of one user or one provider session).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::time::Instant;

use super::{Entry, IndexKey, LockToken, SessionStore, StoreError, StoreKey};

#[derive(Debug)]
struct Slot {
    value: Bytes,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    values: DashMap<Arc<str>, Slot>,
    locks: super::lease::LeaseLocks,
    indexes: DashMap<Box<str>, IndexSet>,
}

#[derive(Debug)]
struct IndexSet {
    /// Without duplicates; the keys are shared with `values` when the record exists.
    members: Vec<Arc<str>>,
    expires_at: Instant,
}

impl Inner {
    /// The value map's own copy of `key` if it has one, so an index entry costs no new string.
    fn shared_key(&self, key: &StoreKey) -> Arc<str> {
        self.values
            .get(key.0.as_str())
            .map(|e| Arc::clone(e.key()))
            .unwrap_or_else(|| Arc::from(key.0.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl MemoryStore {
    /// Creates the store and, inside a Tokio runtime, its sweeper (which stops with the store).
    pub fn new() -> Self {
        let inner = Arc::new(Inner::default());
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(sweep(weak));
        }
        MemoryStore { inner }
    }

    /// Removes expired entries now (the sweeper does this periodically).
    pub fn purge_expired(&self) {
        purge(&self.inner);
    }

    /// Number of entries held, expired or not (for metrics and tests).
    pub fn len(&self) -> usize {
        self.inner.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.values.is_empty()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn purge(inner: &Inner) {
    let now = Instant::now();
    inner.values.retain(|_, s| s.expires_at > now);
    inner.locks.purge();
    inner.indexes.retain(|_, set| {
        set.members
            .retain(|m| inner.values.get(&**m).is_some_and(|s| s.expires_at > now));
        set.expires_at > now && !set.members.is_empty()
    });
}

async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner.upgrade() {
            Some(inner) => purge(&inner),
            None => return,
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError> {
        let now = Instant::now();
        Ok(self.inner.values.get(key.0.as_str()).and_then(|s| {
            (s.expires_at > now).then(|| Entry {
                value: s.value.clone(),
                ttl: s.expires_at - now,
            })
        }))
    }

    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        // An existing entry keeps its key (the one indexes share); only the value changes.
        self.inner.values.insert(
            Arc::from(key.0.as_str()),
            Slot {
                value,
                expires_at: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(match self.inner.values.get_mut(key.0.as_str()) {
            Some(mut s) if s.expires_at > now => {
                s.value = value;
                s.expires_at = now + ttl;
                true
            }
            _ => false,
        })
    }

    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(match self.inner.values.get_mut(key.0.as_str()) {
            Some(mut s) if s.expires_at > now => {
                s.expires_at = now + ttl;
                true
            }
            _ => false,
        })
    }

    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let now = Instant::now();
        Ok(self
            .inner
            .values
            .remove(key.0.as_str())
            .and_then(|(_, s)| (s.expires_at > now).then_some(s.value)))
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.inner.values.remove(key.0.as_str());
        Ok(())
    }

    async fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        self.inner.locks.try_lock(key, lease)
    }

    async fn unlock(&self, key: &StoreKey, token: &LockToken) -> Result<(), StoreError> {
        self.inner.locks.unlock(key, token);
        Ok(())
    }

    async fn index_add(
        &self,
        index: &IndexKey,
        member: &StoreKey,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let shared = self.inner.shared_key(member);
        let mut set = self
            .inner
            .indexes
            .entry(Box::from(index.0.as_str()))
            .or_insert_with(|| IndexSet {
                members: Vec::new(),
                expires_at: now,
            });
        if set.expires_at <= now {
            set.members.clear();
        }
        if !set.members.iter().any(|m| **m == *member.0) {
            // Exact capacity while small (most indexes list one or two sessions); amortised
            // growth beyond, so a subject with many sessions stays linear.
            if set.members.len() < 4 {
                set.members.reserve_exact(1);
            }
            set.members.push(shared);
        }
        set.expires_at = set.expires_at.max(now + ttl);
        Ok(())
    }

    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError> {
        let now = Instant::now();
        Ok(self
            .inner
            .indexes
            .get(index.0.as_str())
            .filter(|s| s.expires_at > now)
            .map(|s| s.members.iter().map(|m| StoreKey(m.to_string())).collect())
            .unwrap_or_default())
    }

    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError> {
        if let Some(mut set) = self.inner.indexes.get_mut(index.0.as_str()) {
            set.members.retain(|m| **m != *member.0);
        }
        self.inner
            .indexes
            .remove_if(index.0.as_str(), |_, s| s.members.is_empty());
        Ok(())
    }

    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut n = 0;
        self.inner.values.retain(|k, s| {
            let hit = k.starts_with(prefix);
            if hit && s.expires_at > now {
                n += 1;
            }
            !hit
        });
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn purge_reclaims_expired_entries() {
        let s = MemoryStore::new();
        let k = StoreKey("s:purge".into());
        s.set(&k, Bytes::from_static(b"v"), Duration::from_millis(10))
            .await
            .expect("set");
        assert_eq!(s.len(), 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.purge_expired();
        assert!(s.is_empty());
    }
}
