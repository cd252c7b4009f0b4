//! Opening the file: created private, never recreated; the format and key-ring checks.

use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, MultimapTableHandle, ReadableTable, ReadableTableMetadata,
    StorageError, TableHandle,
};

use super::{FileStoreError, INDEX_EXPIRY, INDEX_MEMBERS, INDEXES, META, VALUE_EXPIRY, VALUES};
use crate::crypto::{
    keyring::KeyRing,
    seal::{self, Purpose, SealError},
};

const TABLE_NAMES: [&str; 5] = ["values", "value_expiry", "indexes", "index_expiry", "meta"];
const MULTIMAP_TABLE_NAMES: [&str; 1] = ["index_members"];

/// The layout version this code reads and writes, in `meta["format"]`.
const FORMAT_VERSION: u32 = 1;
const META_FORMAT: &str = "format";
const META_CANARY: &str = "key-ring-canary";
const CANARY_SECRET: &[u8] = b"portcullis/file-store-canary";
const CANARY_STORE_KEY: &[u8] = b"canary";
const CANARY_PLAINTEXT: &[u8] = b"portcullis file store: the key ring opens this file";
/// redb's page cache (its default is 1 GiB); the OS page cache holds the rest.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Creates a missing file readable by the owner only, so redb initializes it with those
/// permissions. An existing file is not touched.
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
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

pub(super) fn open_database(path: &Path) -> Result<Database, FileStoreError> {
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
pub(super) fn init(db: &Database, path: &Path, keys: &KeyRing) -> Result<(), FileStoreError> {
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
