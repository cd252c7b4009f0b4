use super::{purge::purge_batch, *};

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
