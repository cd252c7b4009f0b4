//! The persistent embedded store: one `redb` file, so a single instance keeps its sessions across
//! restarts. Opt-in; the in-memory store stays the default for one instance.
//!
//! The file holds only what the [`SessionStore`] trait hands over — already-sealed bytes under
//! keyed-hash store keys — plus expiry timestamps and a key-ring canary. A copy of the file opens
//! nothing without the browsers' cookies (see `crate::crypto::seal`).
//!
//! # Layout
//!
//! | table           | key                  | value                          |
//! |-----------------|----------------------|--------------------------------|
//! | `values`        | store key            | (expires at, sealed bytes)     |
//! | `value_expiry`  | (expires at, key)    | ()  — expiry order, for purge  |
//! | `indexes`       | index key            | expires at                     |
//! | `index_expiry`  | (expires at, index)  | ()                             |
//! | `index_members` | index key (multimap) | member store keys              |
//! | `meta`          | name                 | bytes (format, key-ring canary)|
//!
//! Times are wall-clock unix milliseconds, so a TTL keeps running while the gateway is stopped
//! (and a clock set backwards lengthens it). TTL semantics are the memory store's: an expired
//! entry is invisible at once, `touch` extends only live entries, `take` is one write
//! transaction (so of many concurrent takers exactly one wins). Every commit is durable (fsync)
//! before the call returns: a logout or a used login state never comes back after a crash.
//!
//! Expired records are reclaimed by a background purge that walks the expiry order in batches of
//! [`PURGE_BATCH`] per write transaction, so there is never a long global pause; it then drops
//! index members whose record is gone (and indexes left empty), as the memory store's sweep does,
//! again about [`PURGE_BATCH`] members per transaction.
//!
//! # One instance
//!
//! A file store serves exactly one gateway process: the file is locked while open (a second
//! process gets [`FileStoreError::Locked`]). Locks (`try_lock`/`unlock`) therefore stay in memory,
//! like the memory store's; they are leases of seconds and need not survive a restart.
//!
//! # Startup checks
//!
//! [`FileStore::open`] never deletes, truncates or recreates an existing file. A file that is not
//! a readable redb database (or fails redb's integrity check) is a [`FileStoreError::Corrupt`]
//! error and is left as it is. The `meta` table keeps a canary sealed under the key ring's active
//! key: if no key of the current ring opens it, opening fails with
//! [`FileStoreError::WrongKeyRing`] instead of silently treating every session as invalid. If an
//! older key of the ring opens it, the canary is re-sealed under the active key, so rotation works
//! as usual: prepend the new key, restart, drop the old key after the absolute session lifetime.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

use super::{Entry, IndexKey, LockToken, SessionStore, StoreError, StoreKey};
use crate::crypto::keyring::KeyRing;

const VALUES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("values");
const VALUE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("value_expiry");
const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");
const INDEX_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("index_expiry");
const INDEX_MEMBERS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("index_members");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

mod open;
mod purge;

use open::{create_private, init, open_database};
use purge::{purge_all, sweep};

/// Expired records removed per write transaction by the purge.
pub const PURGE_BATCH: usize = 1000;

/// Why a session file could not be opened. Every variant leaves the file as it was.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("session file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "session file {path} is already open (by another process, or another store in this one); \
         a file store serves exactly one instance: stop the other one, or give this one its own \
         file"
    )]
    Locked { path: PathBuf },
    #[error(
        "session file {path} is corrupt or not a Portcullis session file ({detail}); nothing was \
         deleted from it: restore it from a backup, or move it away to start with no sessions"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "session file {path} was written under session key {file_key_id}, which is not in the \
         configured key ring (active key {active_key_id}): add that key back to the ring (after \
         the new one, to rotate), or delete the file to drop all its sessions"
    )]
    WrongKeyRing {
        path: PathBuf,
        file_key_id: String,
        active_key_id: String,
    },
    #[error("session file {path} cannot be used by this version: {detail}")]
    Incompatible { path: PathBuf, detail: String },
    #[error("session file {path}: {detail}")]
    Storage { path: PathBuf, detail: String },
}

struct Inner {
    db: Database,
    path: PathBuf,
    locks: super::lease::LeaseLocks,
}

/// The persistent embedded store (see the module docs). Cheap to clone; clones share the file.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (or, if it does not exist or is empty, creates) the session file at `path`, checks it
    /// against the key ring and, inside a Tokio runtime, starts its purge task (which stops with
    /// the store). Never deletes or recreates an existing file.
    pub fn open(path: &Path, keys: &KeyRing) -> Result<FileStore, FileStoreError> {
        let path_buf = path.to_path_buf();
        create_private(path).map_err(|source| FileStoreError::Io {
            path: path_buf.clone(),
            source,
        })?;
        let db = open_database(path)?;
        init(&db, path, keys)?;
        let inner = Arc::new(Inner {
            db,
            path: path_buf,
            locks: Default::default(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&inner)));
        }
        Ok(FileStore { inner })
    }

    /// The file this store uses.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Removes expired records now, in batches (the purge task does this periodically). Returns
    /// how many records and indexes it removed.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.inner.locks.purge();
        self.run(purge_all).await
    }

    /// Number of records held, expired or not (for metrics and tests).
    pub async fn len(&self) -> Result<u64, StoreError> {
        self.run(|db| Ok(db.begin_read()?.open_table(VALUES)?.len()?))
            .await
    }

    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }

    /// Runs `f` on a blocking thread (redb is synchronous).
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner.db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("session file task failed: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("session file: {e}")))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A TTL in whole milliseconds, rounded up (so a positive TTL never becomes "already expired").
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Removes `key`'s record and its expiry entry; returns what was there.
fn remove_value(
    txn: &redb::WriteTransaction,
    key: &str,
) -> Result<Option<(u64, Vec<u8>)>, redb::Error> {
    let mut values = txn.open_table(VALUES)?;
    let old = values.remove(key)?.map(|v| {
        let (at, bytes) = v.value();
        (at, bytes.to_vec())
    });
    if let Some((at, _)) = &old {
        txn.open_table(VALUE_EXPIRY)?.remove((*at, key))?;
    }
    Ok(old)
}

/// Writes `key`'s record with a new expiry, keeping the expiry order in step.
fn put_value(
    txn: &redb::WriteTransaction,
    key: &str,
    value: &[u8],
    expires_at: u64,
) -> Result<(), redb::Error> {
    let mut values = txn.open_table(VALUES)?;
    let mut expiry = txn.open_table(VALUE_EXPIRY)?;
    let old_at = values
        .insert(key, (expires_at, value))?
        .map(|v| v.value().0);
    if let Some(old_at) = old_at
        && old_at != expires_at
    {
        expiry.remove((old_at, key))?;
    }
    expiry.insert((expires_at, key), ())?;
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for FileStore {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let now = now_ms();
            let values = db.begin_read()?.open_table(VALUES)?;
            Ok(values.get(key.as_str())?.and_then(|v| {
                let (at, bytes) = v.value();
                (at > now).then(|| Entry {
                    value: Bytes::copy_from_slice(bytes),
                    ttl: Duration::from_millis(at - now),
                })
            }))
        })
        .await
    }

    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let txn = db.begin_write()?;
            put_value(&txn, &key, &value, now_ms().saturating_add(ttl_ms(ttl)))?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let txn = db.begin_write()?;
            let now = now_ms();
            let live = txn
                .open_table(VALUES)?
                .get(key.as_str())?
                .is_some_and(|v| v.value().0 > now);
            if live {
                put_value(&txn, &key, &value, now.saturating_add(ttl_ms(ttl)))?;
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(live)
        })
        .await
    }

    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let txn = db.begin_write()?;
            let now = now_ms();
            let live = txn.open_table(VALUES)?.get(key.as_str())?.and_then(|v| {
                let (at, bytes) = v.value();
                (at > now).then(|| bytes.to_vec())
            });
            match live {
                Some(value) => {
                    put_value(&txn, &key, &value, now.saturating_add(ttl_ms(ttl)))?;
                    txn.commit()?;
                    Ok(true)
                }
                None => {
                    txn.abort()?;
                    Ok(false)
                }
            }
        })
        .await
    }

    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let txn = db.begin_write()?;
            match remove_value(&txn, &key)? {
                Some((at, bytes)) => {
                    txn.commit()?;
                    Ok((at > now_ms()).then(|| Bytes::from(bytes)))
                }
                None => {
                    txn.abort()?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        let key = key.0.clone();
        self.run(move |db| {
            let txn = db.begin_write()?;
            if remove_value(&txn, &key)?.is_some() {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(())
        })
        .await
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
        let (index, member) = (index.0.clone(), member.0.clone());
        self.run(move |db| {
            let txn = db.begin_write()?;
            {
                let now = now_ms();
                let mut indexes = txn.open_table(INDEXES)?;
                let mut index_expiry = txn.open_table(INDEX_EXPIRY)?;
                let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
                let old_at = indexes.get(index.as_str())?.map(|v| v.value());
                let mut expires_at = now.saturating_add(ttl_ms(ttl));
                if let Some(old_at) = old_at {
                    index_expiry.remove((old_at, index.as_str()))?;
                    if old_at > now {
                        expires_at = expires_at.max(old_at);
                    } else {
                        members.remove_all(index.as_str())?;
                    }
                }
                members.insert(index.as_str(), member.as_str())?;
                indexes.insert(index.as_str(), expires_at)?;
                index_expiry.insert((expires_at, index.as_str()), ())?;
            }
            Ok(txn.commit()?)
        })
        .await
    }

    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError> {
        let index = index.0.clone();
        self.run(move |db| {
            let now = now_ms();
            let txn = db.begin_read()?;
            let live = txn
                .open_table(INDEXES)?
                .get(index.as_str())?
                .is_some_and(|v| v.value() > now);
            if !live {
                return Ok(Vec::new());
            }
            txn.open_multimap_table(INDEX_MEMBERS)?
                .get(index.as_str())?
                .map(|m| Ok(StoreKey(m?.value().to_owned())))
                .collect()
        })
        .await
    }

    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError> {
        let (index, member) = (index.0.clone(), member.0.clone());
        self.run(move |db| {
            let txn = db.begin_write()?;
            let changed = {
                let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
                let removed = members.remove(index.as_str(), member.as_str())?;
                if removed && members.get(index.as_str())?.is_empty() {
                    let mut indexes = txn.open_table(INDEXES)?;
                    let old_at = indexes.remove(index.as_str())?.map(|v| v.value());
                    if let Some(old_at) = old_at {
                        txn.open_table(INDEX_EXPIRY)?
                            .remove((old_at, index.as_str()))?;
                    }
                }
                removed
            };
            if changed {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError> {
        let prefix = prefix.to_owned();
        self.run(move |db| {
            let now = now_ms();
            let txn = db.begin_write()?;
            let keys: Vec<(String, u64)> = {
                let values = txn.open_table(VALUES)?;
                let mut out = Vec::new();
                for entry in values.range(prefix.as_str()..)? {
                    let (k, v) = entry?;
                    if !k.value().starts_with(prefix.as_str()) {
                        break;
                    }
                    out.push((k.value().to_owned(), v.value().0));
                }
                out
            };
            let live = keys.iter().filter(|(_, at)| *at > now).count();
            for (k, _) in &keys {
                remove_value(&txn, k)?;
            }
            txn.commit()?;
            Ok(live)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db| {
            db.begin_read()?.open_table(META)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
