//! The Redis store against real `redis-server` processes: standalone, ACL over TLS, Cluster
//! (with a slot being migrated), outages.

use testkit::redis::{RedisCluster, RedisOptions, RedisServer};

use super::*;
use crate::config::Secret;

fn config(topology: RedisTopology) -> RedisConfig {
    RedisConfig {
        topology,
        username: None,
        password: None,
        timeout: Duration::from_secs(2),
        key_prefix: format!("t{}:", crate::crypto::random::token::<4>().expect("rng")),
        ca_pem: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_standalone() {
    let server = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let store = RedisStore::new(config(RedisTopology::Standalone(server.url()))).expect("store");
    super::super::conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_acl_user_over_tls() {
    let server = RedisServer::start(
        RedisOptions::default()
            .with_acl_user("portcullis", "s3cret-pw")
            .with_tls(),
    )
    .await
    .expect("redis");
    assert!(server.url().starts_with("rediss://"));
    let mut cfg = config(RedisTopology::Standalone(server.url()));
    cfg.username = Some("portcullis".into());
    cfg.password = Some(Secret::new("s3cret-pw".into()));
    cfg.ca_pem = Some(server.ca_pem().expect("ca").as_bytes().to_vec());
    let good = cfg.clone();
    super::super::conformance::run_all(Arc::new(RedisStore::new(good).expect("store"))).await;

    // Wrong password, or a server certificate from an untrusted CA: refused, never "anonymous".
    let mut wrong_pw = cfg.clone();
    wrong_pw.password = Some(Secret::new("nope".into()));
    let s = RedisStore::new(wrong_pw).expect("store");
    assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
    let mut untrusted = cfg;
    untrusted.ca_pem = None;
    let s = RedisStore::new(untrusted).expect("store");
    assert!(matches!(
        s.get(&StoreKey("s:x".into())).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cluster() {
    let cluster = RedisCluster::start(3).await.expect("cluster");
    let store = RedisStore::new(config(RedisTopology::Cluster(cluster.urls()))).expect("store");
    store.ping().await.expect("cluster ok");
    super::super::conformance::run_all(Arc::new(store)).await;
    let store = RedisStore::new(config(RedisTopology::Cluster(cluster.urls()))).expect("store");
    crate::session::scenarios::run_all(Arc::new(store)).await;
}

/// A slot being migrated between Cluster nodes: a node answers `ASK` for keys already
/// moved. Reads and index writes of such keys (pipelines, which the cluster client does not
/// redirect) must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_migrating_slot_are_still_served() {
    let cluster = RedisCluster::start(3).await.expect("cluster");
    let store = RedisStore::new(config(RedisTopology::Cluster(cluster.urls()))).expect("store");
    let minute = Duration::from_secs(60);
    let k = StoreKey("s:migrating".into());
    let index = IndexKey("x:migrating".into());
    let (first, second) = (StoreKey("s:m1".into()), StoreKey("s:m2".into()));
    store
        .set(&k, Bytes::from_static(b"v"), minute)
        .await
        .expect("set");
    store
        .index_add(&index, &first, minute)
        .await
        .expect("index");
    for key in [store.key(&k), store.index_key(&index)] {
        migrate_one_key(&cluster, &key).await;
    }
    let entry = store.get(&k).await.expect("get").expect("present");
    assert_eq!(&entry.value[..], b"v");
    assert!(entry.ttl > Duration::from_secs(50), "{:?}", entry.ttl);
    store
        .index_add(&index, &second, minute)
        .await
        .expect("index_add");
    let mut members = store.index_members(&index).await.expect("members");
    members.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(members, vec![first, second]);
    let ttl: i64 = store
        .query(redis::cmd("PTTL").arg(store.index_key(&index)))
        .await
        .expect("pttl");
    assert!(ttl > 50_000, "the index set keeps its expiry: {ttl} ms");
}

/// Starts moving `key`'s slot from its master to another one and moves `key` alone, leaving
/// the slot `MIGRATING`/`IMPORTING`, as `redis-cli --cluster reshard` does half-way.
async fn migrate_one_key(cluster: &RedisCluster, key: &str) {
    let int = |r: testkit::redis::Reply| r.as_int().expect("integer reply");
    let slot = int(cluster
        .command(0, &["CLUSTER", "KEYSLOT", key])
        .await
        .expect("keyslot"))
    .to_string();
    let masters = cluster.master_indexes().await.expect("masters");
    let mut source = None;
    for &m in &masters {
        let n = cluster
            .command(m, &["CLUSTER", "COUNTKEYSINSLOT", slot.as_str()])
            .await
            .expect("count");
        if int(n) > 0 {
            source = Some(m);
        }
    }
    let source = source.expect("the slot's master");
    let target = *masters
        .iter()
        .find(|&&m| m != source)
        .expect("another master");
    let id = |i: usize| async move {
        cluster
            .command(i, &["CLUSTER", "MYID"])
            .await
            .expect("myid")
            .as_str()
            .expect("id")
            .to_owned()
    };
    let (source_id, target_id) = (id(source).await, id(target).await);
    let port = cluster.ports()[target].to_string();
    for (node, args) in [
        (
            target,
            vec!["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id],
        ),
        (
            source,
            vec!["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id],
        ),
        (
            source,
            vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", key],
        ),
    ] {
        let reply = cluster.command(node, &args).await.expect("command");
        assert_eq!(reply.as_str(), Some("OK"), "{args:?}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_an_error_and_recovery_needs_no_new_store() {
    let mut server = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let store = RedisStore::new(config(RedisTopology::Standalone(server.url()))).expect("store");
    let k = StoreKey("s:outage".into());
    store
        .set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .expect("set");
    server.stop().await.expect("stop");
    assert!(matches!(
        store.get(&k).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.ping().await.is_err());
    server.restart().await.expect("restart");
    let mut back = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the same store reconnects once Redis is back");
    store
        .set(&k, Bytes::from_static(b"w"), Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(
        &store.get(&k).await.expect("get").expect("value").value[..],
        b"w"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_while_redis_is_down_is_allowed_and_fails_closed() {
    let port = testkit::free_port();
    let store = RedisStore::new(config(RedisTopology::Standalone(format!(
        "redis://127.0.0.1:{port}"
    ))))
    .expect("store");
    assert!(matches!(
        store.get(&StoreKey("s:y".into())).await,
        Err(StoreError::Unavailable(_))
    ));
    let _server = RedisServer::start(RedisOptions::default().with_port(port))
        .await
        .expect("redis");
    store
        .ping()
        .await
        .expect("connects lazily once Redis is up");
}

#[test]
fn keys_share_a_hash_tag_with_their_lock() {
    let store = RedisStore::new(config(RedisTopology::Standalone(
        "redis://127.0.0.1:1".into(),
    )))
    .expect("store");
    let k = StoreKey("s:abc".into());
    let tag = |s: &str| s[s.find('{').expect("{")..=s.find('}').expect("}")].to_owned();
    assert_eq!(tag(&store.key(&k)), tag(&store.lock_key(&k)));
    assert!(store.key(&k).ends_with("{s:abc}"));
}
