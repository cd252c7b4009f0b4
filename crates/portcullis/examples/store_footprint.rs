//! Measures what one realistic session costs in each store.
//!
//! `cargo run --release -p portcullis --example store_footprint -- [N] [redis://…]`
//! (`--no-default-features` to measure with the system allocator instead of mimalloc)
//!
//! A session holds ~1 KB JWT-shaped access and ID tokens, a refresh token and a few claims.
//! Reported: the sealed record size; the memory store's RSS growth per session; the file store's
//! bytes on disk per session; and, given a Redis URL, Redis `used_memory` growth per session.
#![allow(clippy::print_stdout)]

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis::{
    config::{RedisConfig, RedisTopology},
    crypto::{keyring::KeyRing, random},
    oidc::now_unix,
    session::{SessionManager, SessionRecord},
    store::{FileStore, MemoryStore, RedisStore, SessionStore},
};

/// The same allocator as the `portcullis` binary, so the figures are the binary's
/// (`--no-default-features`: the system allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn jwt(payload_bytes: usize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(vec![b'x'; payload_bytes]);
    let sig = URL_SAFE_NO_PAD.encode([7u8; 256]);
    format!("{header}.{payload}.{sig}")
}

fn record() -> SessionRecord {
    let now = now_unix();
    // One user per session, as in a real deployment: each session adds its own subject index
    // entry (a shared subject would hide that cost).
    let sub = random::token::<9>().expect("rng");
    let mut user = serde_json::Map::new();
    user.insert("sub".into(), sub.clone().into());
    user.insert("name".into(), "Jane Doe".into());
    user.insert("email".into(), "janedoe@example.com".into());
    SessionRecord {
        sub,
        iss: "https://idp.example.com".into(),
        sid: Some(random::token::<16>().expect("rng")),
        user,
        claims: serde_json::Map::new(),
        scopes: vec!["openid".into(), "profile".into(), "email".into()],
        csrf_token: random::token::<32>().expect("rng"),
        access_token: jwt(600),
        access_expires_at: Some(now + 300),
        refresh_token: Some(random::token::<48>().expect("rng")),
        id_token: Some(jwt(500)),
        created_at: now,
        absolute_expires_at: now + 8 * 3600,
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

async fn fill(store: Arc<dyn SessionStore>, keys: &KeyRing, n: usize) -> usize {
    let m = SessionManager::new(
        store,
        keys.clone(),
        Duration::from_secs(8 * 3600),
        Duration::from_secs(1800),
    );
    let mut sealed = 0;
    for i in 0..n {
        let s = m.create(record()).await.expect("create");
        if i == 0 {
            sealed = m
                .store()
                .get(&s.key)
                .await
                .expect("get")
                .expect("stored")
                .value
                .len();
        }
    }
    sealed
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let redis_url = args.next();
    let keys = KeyRing::parse(&KeyRing::generate_encoded().expect("rng")).expect("keys");

    let before = rss_bytes();
    let sealed = fill(Arc::new(MemoryStore::new()), &keys, n).await;
    let after = rss_bytes();
    println!("sealed record: {sealed} B (JSON record sealed with AES-256-GCM, 33 B overhead)");
    println!(
        "memory store: {n} sessions, RSS +{} MiB = {} B/session ({:.2}x the sealed size; includes the subject and sid indexes)",
        (after - before) >> 20,
        (after - before) / n as u64,
        (after - before) as f64 / n as f64 / sealed as f64
    );

    let file_n = n.min(10_000);
    let dir = std::env::temp_dir().join(format!("portcullis-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sessions.redb");
    let store = FileStore::open(&path, &keys).expect("file store");
    fill(Arc::new(store), &keys, file_n).await;
    let size = std::fs::metadata(&path).expect("stat").len();
    println!(
        "file store: {file_n} sessions, {size} B on disk = {} B/session",
        size / file_n as u64
    );
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(url) = redis_url {
        let info = |s: String| {
            s.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("used_memory")
        };
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let used = |c: &mut redis::aio::MultiplexedConnection| {
            let mut c = c.clone();
            async move {
                redis::cmd("INFO")
                    .arg("memory")
                    .query_async::<String>(&mut c)
                    .await
                    .expect("INFO")
            }
        };
        let before = info(used(&mut conn).await);
        let store = RedisStore::new(RedisConfig {
            topology: RedisTopology::Standalone(url.clone()),
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            key_prefix: "footprint:".into(),
            ca_pem: None,
        })
        .expect("redis store");
        let redis_n = n.min(100_000);
        fill(Arc::new(store), &keys, redis_n).await;
        let after = info(used(&mut conn).await);
        println!(
            "redis store: {redis_n} sessions, used_memory +{} MiB = {} B/session (indexes included)",
            (after - before) >> 20,
            (after - before) / redis_n as u64
        );
    }
}
