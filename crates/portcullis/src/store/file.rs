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
    ops::Bound,
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use redb::{
    Database, DatabaseError, MultimapTableDefinition, MultimapTableHandle, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
    TableHandle,
};

use super::{Entry, IndexKey, LockToken, SessionStore, StoreError, StoreKey};
use crate::crypto::{
    keyring::KeyRing,
    seal::{self, Purpose, SealError},
};

const VALUES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("values");
const VALUE_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("value_expiry");
const INDEXES: TableDefinition<&str, u64> = TableDefinition::new("indexes");
const INDEX_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("index_expiry");
const INDEX_MEMBERS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("index_members");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const TABLE_NAMES: [&str; 5] = ["values", "value_expiry", "indexes", "index_expiry", "meta"];
const MULTIMAP_TABLE_NAMES: [&str; 1] = ["index_members"];

/// The layout version this code reads and writes, in `meta["format"]`.
const FORMAT_VERSION: u32 = 1;
const META_FORMAT: &str = "format";
const META_CANARY: &str = "key-ring-canary";
const CANARY_SECRET: &[u8] = b"portcullis/file-store-canary";
const CANARY_STORE_KEY: &[u8] = b"canary";
const CANARY_PLAINTEXT: &[u8] = b"portcullis file store: the key ring opens this file";

/// Expired records removed per write transaction by the purge.
pub const PURGE_BATCH: usize = 1000;
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// redb's page cache (its default is 1 GiB); the OS page cache holds the rest.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

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

/// Creates a missing file readable by the owner only, so redb initializes it with those
/// permissions. An existing file is not touched.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn open_database(path: &Path) -> Result<Database, FileStoreError> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(CACHE_BYTES)
        // Verify every page on open (checksums, allocator state): a damaged file is reported
        // instead of trusted, where a plain open of a cleanly closed file may panic on one.
        .set_check_integrity_on_open(true);
    // `create` initializes only a missing or empty file and opens anything else as is (never
    // truncating it). redb may still panic on some damaged files; that is a corrupt file too.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
    let p = path.to_path_buf();
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(database_error(p, e)),
        Err(_) => Err(FileStoreError::Corrupt {
            path: p,
            detail: "the database engine failed while reading it".into(),
        }),
    }
}

fn database_error(path: PathBuf, e: DatabaseError) -> FileStoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            FileStoreError::Locked { path }
        }
        DatabaseError::RepairAborted => FileStoreError::Corrupt {
            path,
            detail: "it needs a repair, which was refused".into(),
        },
        DatabaseError::UpgradeRequired(v) => FileStoreError::Incompatible {
            path,
            detail: format!("it is in redb file format {v}, which this version cannot read"),
        },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            FileStoreError::Corrupt { path, detail }
        }
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() == std::io::ErrorKind::InvalidData =>
        {
            FileStoreError::Corrupt {
                path,
                detail: source.to_string(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => FileStoreError::Io { path, source },
        other => FileStoreError::Storage {
            path,
            detail: other.to_string(),
        },
    }
}

fn redb_error(path: &Path, e: redb::Error) -> FileStoreError {
    let path = path.to_path_buf();
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            FileStoreError::Locked { path }
        }
        redb::Error::Corrupted(detail) => FileStoreError::Corrupt { path, detail },
        redb::Error::Io(source) => FileStoreError::Io { path, source },
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }) => FileStoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        other => FileStoreError::Storage {
            path,
            detail: other.to_string(),
        },
    }
}

fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the tables and checks the layout version and the key-ring canary, in one write
/// transaction that commits only if every check passed.
fn init(db: &Database, path: &Path, keys: &KeyRing) -> Result<(), FileStoreError> {
    let corrupt = |detail: String| FileStoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let re = |e: redb::Error| redb_error(path, e);
    let txn = db.begin_write().map_err(|e| re(e.into()))?;

    let foreign = txn
        .list_tables()
        .map_err(|e| re(e.into()))?
        .map(|t| t.name().to_owned())
        .filter(|n| !TABLE_NAMES.contains(&n.as_str()))
        .chain(
            txn.list_multimap_tables()
                .map_err(|e| re(e.into()))?
                .map(|t| t.name().to_owned())
                .filter(|n| !MULTIMAP_TABLE_NAMES.contains(&n.as_str())),
        )
        .collect::<Vec<_>>();
    if !foreign.is_empty() {
        return Err(corrupt(format!(
            "it holds tables a session file does not have: {}",
            foreign.join(", ")
        )));
    }

    {
        let values = txn.open_table(VALUES).map_err(|e| re(e.into()))?;
        let indexes = txn.open_table(INDEXES).map_err(|e| re(e.into()))?;
        txn.open_table(VALUE_EXPIRY).map_err(|e| re(e.into()))?;
        txn.open_table(INDEX_EXPIRY).map_err(|e| re(e.into()))?;
        txn.open_multimap_table(INDEX_MEMBERS)
            .map_err(|e| re(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| re(e.into()))?;

        match meta.get(META_FORMAT).map_err(|e| re(e.into()))? {
            None => {}
            Some(v) => {
                let bytes: [u8; 4] = v
                    .value()
                    .try_into()
                    .map_err(|_| corrupt("its format marker is malformed".into()))?;
                let version = u32::from_le_bytes(bytes);
                if version != FORMAT_VERSION {
                    return Err(FileStoreError::Incompatible {
                        path: path.to_path_buf(),
                        detail: format!(
                            "it has session-file format {version}; this version reads format \
                             {FORMAT_VERSION}"
                        ),
                    });
                }
            }
        }

        let canary = meta
            .get(META_CANARY)
            .map_err(|e| re(e.into()))?
            .map(|v| v.value().to_vec());
        let reseal = match canary {
            None => {
                let empty = values.is_empty().map_err(|e| re(e.into()))?
                    && indexes.is_empty().map_err(|e| re(e.into()))?;
                if !empty {
                    return Err(corrupt("it holds sessions but no key-ring canary".into()));
                }
                true
            }
            Some(sealed) => match seal::open(
                keys,
                Purpose::Session,
                CANARY_SECRET,
                CANARY_STORE_KEY,
                &sealed,
            ) {
                Ok(plain) if plain == CANARY_PLAINTEXT => {
                    sealed.get(1..5) != Some(keys.active().id.as_slice())
                }
                Ok(_) => {
                    return Err(corrupt(
                        "its key-ring canary has unexpected contents".into(),
                    ));
                }
                Err(SealError::UnknownKey) => {
                    return Err(FileStoreError::WrongKeyRing {
                        path: path.to_path_buf(),
                        file_key_id: hex_id(sealed.get(1..5).unwrap_or_default()),
                        active_key_id: hex_id(&keys.active().id),
                    });
                }
                Err(e) => return Err(corrupt(format!("its key-ring canary: {e}"))),
            },
        };
        if reseal {
            let sealed = seal::seal(
                keys,
                Purpose::Session,
                CANARY_SECRET,
                CANARY_STORE_KEY,
                CANARY_PLAINTEXT,
            )
            .map_err(|e| FileStoreError::Storage {
                path: path.to_path_buf(),
                detail: format!("sealing the key-ring canary: {e}"),
            })?;
            meta.insert(META_CANARY, sealed.as_slice())
                .map_err(|e| re(e.into()))?;
        }
        meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
            .map_err(|e| re(e.into()))?;
    }
    txn.commit().map_err(|e| re(e.into()))
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

/// One purge batch: up to [`PURGE_BATCH`] expired records and as many expired indexes.
fn purge_batch(db: &Database, now: u64) -> Result<(usize, bool), redb::Error> {
    let txn = db.begin_write()?;
    let (removed, more) = {
        let mut expiry = txn.open_table(VALUE_EXPIRY)?;
        let mut values = txn.open_table(VALUES)?;
        let due: Vec<(u64, String)> = expiry
            .range::<(u64, &str)>(..(now.saturating_add(1), ""))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
            .collect::<Result<_, _>>()?;
        for (at, key) in &due {
            expiry.remove((*at, key.as_str()))?;
            let stale = values
                .get(key.as_str())?
                .is_some_and(|v| v.value().0 == *at);
            if stale {
                values.remove(key.as_str())?;
            }
        }

        let mut index_expiry = txn.open_table(INDEX_EXPIRY)?;
        let mut indexes = txn.open_table(INDEXES)?;
        let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
        let due_indexes: Vec<(u64, String)> = index_expiry
            .range::<(u64, &str)>(..(now.saturating_add(1), ""))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
            .collect::<Result<_, _>>()?;
        for (at, index) in &due_indexes {
            index_expiry.remove((*at, index.as_str()))?;
            let stale = indexes
                .get(index.as_str())?
                .is_some_and(|v| v.value() == *at);
            if stale {
                indexes.remove(index.as_str())?;
                members.remove_all(index.as_str())?;
            }
        }
        (
            due.len() + due_indexes.len(),
            due.len() == PURGE_BATCH || due_indexes.len() == PURGE_BATCH,
        )
    };
    if removed == 0 {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok((removed, more))
}

/// Drops, from the indexes after `after`, members whose record is gone or expired (and indexes
/// left empty), checking about [`PURGE_BATCH`] members per write transaction. Returns how many
/// indexes it removed and where to resume (`None` once every index was visited).
fn prune_members_batch(
    db: &Database,
    now: u64,
    after: Option<&str>,
) -> Result<(usize, Option<String>), redb::Error> {
    let txn = db.begin_write()?;
    let mut changed = false;
    let mut removed = 0;
    let mut resume = None;
    {
        let mut indexes = txn.open_table(INDEXES)?;
        let mut index_expiry = txn.open_table(INDEX_EXPIRY)?;
        let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
        let values = txn.open_table(VALUES)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let names: Vec<(String, u64)> = indexes
            .range::<&str>((lower, Bound::Unbounded))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, v)| (k.value().to_owned(), v.value())))
            .collect::<Result<_, _>>()?;
        let mut checked = 0;
        for (i, (index, at)) in names.iter().enumerate() {
            let all: Vec<String> = members
                .get(index.as_str())?
                .map(|m| m.map(|m| m.value().to_owned()))
                .collect::<Result<_, _>>()?;
            checked += all.len();
            let mut left = all.len();
            for m in &all {
                let live = values.get(m.as_str())?.is_some_and(|v| v.value().0 > now);
                if !live {
                    members.remove(index.as_str(), m.as_str())?;
                    left -= 1;
                    changed = true;
                }
            }
            if left == 0 {
                indexes.remove(index.as_str())?;
                index_expiry.remove((*at, index.as_str()))?;
                removed += 1;
                changed = true;
            }
            if checked >= PURGE_BATCH && i + 1 < names.len() {
                resume = Some(index.clone());
                break;
            }
        }
        if resume.is_none() && names.len() == PURGE_BATCH {
            resume = names.last().map(|(index, _)| index.clone());
        }
    }
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok((removed, resume))
}

/// Purges batch after batch (each its own write transaction, so other writers run in between)
/// until nothing expired is left, then drops index members whose record is gone, as the memory
/// store's sweep does.
fn purge_all(db: &Database) -> Result<usize, redb::Error> {
    let now = now_ms();
    let mut total = 0;
    loop {
        let (removed, more) = purge_batch(db, now)?;
        total += removed;
        if !more {
            break;
        }
    }
    let mut cursor: Option<String> = None;
    loop {
        let (removed, next) = prune_members_batch(db, now, cursor.as_deref())?;
        total += removed;
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(total),
        }
    }
}

async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = inner.upgrade().map(|inner| FileStore { inner }) else {
            return;
        };
        if let Err(e) = store.purge_expired().await {
            tracing::warn!(error = %e, "purging expired sessions from the session file failed");
        }
    }
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
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "portcullis-file-store-{name}-{}-{}",
                std::process::id(),
                crate::crypto::random::token::<6>().expect("rng")
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("sessions.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key_string() -> String {
        KeyRing::generate_encoded().expect("rng")
    }

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::parse(&keys.join(",")).expect("valid ring")
    }

    fn key(s: &str) -> StoreKey {
        StoreKey(format!("s:file-{s}"))
    }

    #[tokio::test]
    async fn conformance() {
        let dir = TempDir::new("conformance");
        let store = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect("open");
        super::super::conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_scenarios() {
        let dir = TempDir::new("scenarios");
        let store = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect("open");
        crate::session::scenarios::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn sessions_survive_a_reopen_and_expired_ones_are_purged() {
        let dir = TempDir::new("reopen");
        let keys = ring(&[&key_string()]);
        let (long, short, idx) = (key("long"), key("short"), IndexKey("i:file-reopen".into()));
        {
            let s = FileStore::open(&dir.file(), &keys).expect("create");
            s.set(&long, Bytes::from_static(b"kept"), Duration::from_secs(60))
                .await
                .expect("set");
            s.set(
                &short,
                Bytes::from_static(b"gone"),
                Duration::from_millis(100),
            )
            .await
            .expect("set");
            s.index_add(&idx, &long, Duration::from_secs(60))
                .await
                .expect("index");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = FileStore::open(&dir.file(), &keys).expect("reopen");
        let e = s.get(&long).await.expect("get").expect("survived");
        assert_eq!(&e.value[..], b"kept");
        assert!(
            e.ttl <= Duration::from_secs(60) && e.ttl > Duration::from_secs(55),
            "TTL kept running across the restart ({:?})",
            e.ttl
        );
        assert_eq!(
            s.index_members(&idx).await.expect("members"),
            vec![long.clone()]
        );
        assert!(s.get(&short).await.expect("get").is_none(), "expired");
        assert_eq!(s.len().await.expect("len"), 2, "not purged yet");
        assert_eq!(s.purge_expired().await.expect("purge"), 1);
        assert_eq!(s.len().await.expect("len"), 1);
        assert!(s.get(&long).await.expect("get").is_some(), "live ones kept");
    }

    #[tokio::test]
    async fn a_ring_without_the_files_key_is_refused_and_the_file_kept() {
        let dir = TempDir::new("wrong-ring");
        let right = ring(&[&key_string()]);
        {
            let s = FileStore::open(&dir.file(), &right).expect("create");
            s.set(&key("a"), Bytes::from_static(b"v"), Duration::from_secs(60))
                .await
                .expect("set");
        }
        let before = std::fs::metadata(dir.file()).expect("stat").len();
        let err = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect_err("wrong ring");
        assert!(
            matches!(err, FileStoreError::WrongKeyRing { .. }),
            "got {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("add that key back") && msg.contains("delete the file"),
            "{msg}"
        );
        assert!(
            std::fs::metadata(dir.file()).expect("stat").len() >= before,
            "nothing was dropped"
        );
        let s = FileStore::open(&dir.file(), &right).expect("the right ring still opens it");
        assert!(s.get(&key("a")).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn key_rotation_reseals_the_canary() {
        let dir = TempDir::new("rotation");
        let (old, new) = (key_string(), key_string());
        drop(FileStore::open(&dir.file(), &ring(&[&old])).expect("create"));
        drop(FileStore::open(&dir.file(), &ring(&[&new, &old])).expect("new key prepended"));
        drop(FileStore::open(&dir.file(), &ring(&[&new])).expect("old key dropped later"));
        assert!(matches!(
            FileStore::open(&dir.file(), &ring(&[&old])),
            Err(FileStoreError::WrongKeyRing { .. })
        ));
    }

    #[tokio::test]
    async fn a_garbage_file_is_refused_and_left_untouched() {
        let dir = TempDir::new("garbage");
        let garbage: Vec<u8> = (0..64 * 1024u32)
            .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap_or(0))
            .collect();
        std::fs::write(dir.file(), &garbage).expect("write");
        let err = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect_err("garbage");
        assert!(matches!(err, FileStoreError::Corrupt { .. }), "got {err:?}");
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        assert!(
            std::fs::read(dir.file()).expect("read") == garbage,
            "the file was changed"
        );
    }

    #[tokio::test]
    async fn a_damaged_database_is_refused() {
        let dir = TempDir::new("damaged");
        let keys = ring(&[&key_string()]);
        {
            let s = FileStore::open(&dir.file(), &keys).expect("create");
            for i in 0..20 {
                s.set(
                    &key(&format!("d{i}")),
                    Bytes::from(vec![7u8; 1500]),
                    Duration::from_secs(60),
                )
                .await
                .expect("set");
            }
        }
        let mut bytes = std::fs::read(dir.file()).expect("read");
        // Flip bytes past the header, in the pages that hold the records.
        let len = bytes.len();
        for b in &mut bytes[len / 4..len - 4096] {
            *b ^= 0x5a;
        }
        std::fs::write(dir.file(), &bytes).expect("write");
        let err = FileStore::open(&dir.file(), &keys).expect_err("damaged");
        assert!(matches!(err, FileStoreError::Corrupt { .. }), "got {err:?}");
        assert!(
            std::fs::read(dir.file()).expect("read") == bytes,
            "the file was changed"
        );
    }

    #[tokio::test]
    async fn a_foreign_redb_file_is_refused() {
        let dir = TempDir::new("foreign");
        {
            let db = Database::create(dir.file()).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(TableDefinition::<&str, u64>::new("other"))
                .expect("table")
                .insert("x", 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect_err("foreign");
        assert!(matches!(err, FileStoreError::Corrupt { .. }), "got {err:?}");
    }

    #[tokio::test]
    async fn a_file_in_use_is_refused() {
        let dir = TempDir::new("locked");
        let keys = ring(&[&key_string()]);
        let _first = FileStore::open(&dir.file(), &keys).expect("open");
        let err = FileStore::open(&dir.file(), &keys).expect_err("second open");
        assert!(matches!(err, FileStoreError::Locked { .. }), "got {err:?}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_io_error() {
        let dir = TempDir::new("missing");
        let err = FileStore::open(&dir.0.join("nope/sessions.redb"), &ring(&[&key_string()]))
            .expect_err("no directory");
        assert!(matches!(err, FileStoreError::Io { .. }), "got {err:?}");
    }

    #[tokio::test]
    async fn purge_removes_expired_records_in_batches() {
        let dir = TempDir::new("purge");
        let s = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect("open");
        const N: usize = 2500;
        for i in 0..N {
            s.set(
                &key(&format!("p{i}")),
                Bytes::from_static(b"short"),
                Duration::from_millis(300),
            )
            .await
            .expect("set");
        }
        s.set(
            &key("keep"),
            Bytes::from_static(b"long"),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
        let idx = IndexKey("i:file-purge".into());
        s.index_add(&idx, &key("p0"), Duration::from_millis(1))
            .await
            .expect("index");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(s.get(&key("p0")).await.expect("get").is_none());
        // A batch leaves the rest for the next write transaction.
        let (removed, more) = purge_batch(&s.inner.db, now_ms()).expect("one batch");
        assert_eq!((removed, more), (PURGE_BATCH + 1, true));
        assert_eq!(s.purge_expired().await.expect("purge"), N - PURGE_BATCH);
        assert_eq!(s.len().await.expect("len"), 1);
        assert!(s.get(&key("keep")).await.expect("get").is_some());
        assert!(s.index_members(&idx).await.expect("members").is_empty());
        assert_eq!(s.purge_expired().await.expect("purge"), 0);
    }

    #[tokio::test]
    async fn purge_drops_index_members_whose_record_is_gone() {
        let dir = TempDir::new("index-prune");
        let s = FileStore::open(&dir.file(), &ring(&[&key_string()])).expect("open");
        let idx = IndexKey("i:file-prune".into());
        let (a, b) = (key("ia"), key("ib"));
        s.set(&a, Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .expect("set");
        s.index_add(&idx, &a, Duration::from_secs(60))
            .await
            .expect("add");
        s.delete(&a).await.expect("delete");
        s.set(&b, Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .expect("set");
        s.index_add(&idx, &b, Duration::from_secs(60))
            .await
            .expect("add");
        let gone = IndexKey("i:file-prune-gone".into());
        s.index_add(&gone, &a, Duration::from_secs(60))
            .await
            .expect("add");
        assert_eq!(s.index_members(&idx).await.expect("members").len(), 2);
        assert_eq!(s.purge_expired().await.expect("purge"), 1, "emptied index");
        assert_eq!(s.index_members(&idx).await.expect("members"), vec![b]);
        assert!(s.index_members(&gone).await.expect("members").is_empty());
    }
}
