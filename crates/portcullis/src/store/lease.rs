//! In-process lease locks with owner tokens, for the stores that live in one process (memory,
//! file): a lock expires with its lease, and only its holder's token releases it.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{LockToken, StoreError, StoreKey};

#[derive(Debug, Default)]
pub(crate) struct LeaseLocks(DashMap<StoreKey, (u128, Instant)>);

impl LeaseLocks {
    pub(crate) fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        let now = Instant::now();
        let token = u128::from_ne_bytes(
            crate::crypto::random::bytes::<16>()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        let mut entry = self.0.entry(key.clone()).or_insert((0, now));
        if entry.0 != 0 && entry.1 > now {
            return Ok(None);
        }
        *entry = (token, now + lease);
        Ok(Some(LockToken(token)))
    }

    pub(crate) fn unlock(&self, key: &StoreKey, token: &LockToken) {
        self.0.remove_if(key, |_, (t, _)| *t == token.0);
    }

    /// Forgets expired leases (called by the stores' sweepers).
    pub(crate) fn purge(&self) {
        let now = Instant::now();
        self.0.retain(|_, (_, until)| *until > now);
    }
}
