//! One conformance suite for every store backend: each backend's tests call [`run_all`].

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::{IndexKey, SessionStore, StoreKey};

fn key(s: &str) -> StoreKey {
    StoreKey(format!("s:conformance-{s}"))
}

pub async fn run_all(store: Arc<dyn SessionStore>) {
    set_get_delete(&*store).await;
    ttl_expires(&*store).await;
    touch_extends_only_live_entries(&*store).await;
    replace_writes_only_live_entries(Arc::clone(&store)).await;
    take_is_single_use_under_concurrency(Arc::clone(&store)).await;
    lock_is_exclusive_and_lease_bound(&*store).await;
    index_add_list_remove(&*store).await;
    delete_all_by_prefix(&*store).await;
    store.ping().await.expect("ping");
}

async fn set_get_delete(s: &dyn SessionStore) {
    let k = key("sgd");
    assert!(s.get(&k).await.expect("get").is_none());
    s.set(&k, Bytes::from_static(b"v1"), Duration::from_secs(60))
        .await
        .expect("set");
    let e = s.get(&k).await.expect("get").expect("present");
    assert_eq!(&e.value[..], b"v1");
    assert!(e.ttl <= Duration::from_secs(60) && e.ttl > Duration::from_secs(50));
    s.set(&k, Bytes::from_static(b"v2"), Duration::from_secs(60))
        .await
        .expect("overwrite");
    assert_eq!(
        &s.get(&k).await.expect("get").expect("present").value[..],
        b"v2"
    );
    s.delete(&k).await.expect("delete");
    assert!(s.get(&k).await.expect("get").is_none());
    s.delete(&k).await.expect("deleting a missing key is fine");
}

async fn ttl_expires(s: &dyn SessionStore) {
    let k = key("ttl");
    s.set(&k, Bytes::from_static(b"v"), Duration::from_millis(100))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        s.get(&k).await.expect("get").is_none(),
        "expired entries are gone"
    );
    assert!(s.take(&k).await.expect("take").is_none());
}

async fn touch_extends_only_live_entries(s: &dyn SessionStore) {
    let k = key("touch");
    assert!(
        !s.touch(&k, Duration::from_secs(60))
            .await
            .expect("touch missing")
    );
    s.set(&k, Bytes::from_static(b"v"), Duration::from_secs(5))
        .await
        .expect("set");
    assert!(s.touch(&k, Duration::from_secs(120)).await.expect("touch"));
    let ttl = s.get(&k).await.expect("get").expect("present").ttl;
    assert!(
        ttl > Duration::from_secs(100),
        "touch set the new TTL ({ttl:?})"
    );
    assert_eq!(
        &s.get(&k).await.expect("get").expect("present").value[..],
        b"v",
        "value unchanged"
    );
}

async fn replace_writes_only_live_entries(s: Arc<dyn SessionStore>) {
    let k = key("replace");
    let minute = Duration::from_secs(60);
    assert!(
        !s.replace(&k, Bytes::from_static(b"v0"), minute)
            .await
            .expect("replace missing"),
        "nothing to replace"
    );
    assert!(
        s.get(&k).await.expect("get").is_none(),
        "and nothing created"
    );
    s.set(&k, Bytes::from_static(b"v1"), Duration::from_secs(5))
        .await
        .expect("set");
    assert!(
        s.replace(&k, Bytes::from_static(b"v2"), Duration::from_secs(120))
            .await
            .expect("replace")
    );
    let e = s.get(&k).await.expect("get").expect("present");
    assert_eq!(&e.value[..], b"v2");
    assert!(
        e.ttl > Duration::from_secs(100),
        "the new TTL ({:?})",
        e.ttl
    );
    s.delete(&k).await.expect("delete");
    assert!(
        !s.replace(&k, Bytes::from_static(b"v3"), minute)
            .await
            .expect("replace deleted"),
        "a deleted entry stays deleted"
    );
    assert!(s.get(&k).await.expect("get").is_none());

    let expired = key("replace-expired");
    s.set(
        &expired,
        Bytes::from_static(b"v"),
        Duration::from_millis(50),
    )
    .await
    .expect("set");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !s.replace(&expired, Bytes::from_static(b"w"), minute)
            .await
            .expect("replace expired"),
        "an expired entry is not revived"
    );
    assert!(s.get(&expired).await.expect("get").is_none());

    // Racing a delete: whichever lands first, the entry ends up deleted, never deleted and then
    // written back.
    for round in 0..20 {
        let k = key(&format!("replace-race-{round}"));
        s.set(&k, Bytes::from_static(b"v"), minute)
            .await
            .expect("set");
        let writer = {
            let s = Arc::clone(&s);
            let k = k.clone();
            tokio::spawn(async move { s.replace(&k, Bytes::from_static(b"new"), minute).await })
        };
        s.delete(&k).await.expect("delete");
        writer.await.expect("join").expect("replace");
        assert!(
            s.get(&k).await.expect("get").is_none(),
            "round {round}: both done, so deleted (replaced first) or not replaced at all"
        );
    }
}

async fn take_is_single_use_under_concurrency(s: Arc<dyn SessionStore>) {
    let k = key("take");
    s.set(&k, Bytes::from_static(b"once"), Duration::from_secs(60))
        .await
        .expect("set");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = Arc::clone(&s);
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            s.take(&k).await.expect("take").is_some()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("join"));
    }
    assert_eq!(winners, 1, "exactly one taker");
}

async fn lock_is_exclusive_and_lease_bound(s: &dyn SessionStore) {
    let k = key("lock");
    let t1 = s
        .try_lock(&k, Duration::from_millis(200))
        .await
        .expect("lock")
        .expect("free");
    assert!(
        s.try_lock(&k, Duration::from_secs(1))
            .await
            .expect("lock")
            .is_none(),
        "held"
    );
    // A stale token cannot release someone else's lock.
    s.unlock(&k, &super::LockToken(t1.0.wrapping_add(1)))
        .await
        .expect("unlock");
    assert!(
        s.try_lock(&k, Duration::from_secs(1))
            .await
            .expect("lock")
            .is_none(),
        "still held"
    );
    s.unlock(&k, &t1).await.expect("unlock");
    let t2 = s
        .try_lock(&k, Duration::from_millis(100))
        .await
        .expect("lock")
        .expect("free again");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let t3 = s
        .try_lock(&k, Duration::from_secs(1))
        .await
        .expect("lock")
        .expect("lease expired");
    // The expired holder's unlock must not free the new holder's lock.
    s.unlock(&k, &t2).await.expect("unlock");
    assert!(
        s.try_lock(&k, Duration::from_secs(1))
            .await
            .expect("lock")
            .is_none()
    );
    s.unlock(&k, &t3).await.expect("unlock");
}

async fn index_add_list_remove(s: &dyn SessionStore) {
    let idx = IndexKey(format!(
        "i:conformance-{}",
        crate::crypto::random::token::<6>().expect("rng")
    ));
    assert!(s.index_members(&idx).await.expect("members").is_empty());
    let (a, b) = (key("idx-a"), key("idx-b"));
    s.index_add(&idx, &a, Duration::from_secs(60))
        .await
        .expect("add");
    s.index_add(&idx, &b, Duration::from_secs(60))
        .await
        .expect("add");
    s.index_add(&idx, &a, Duration::from_secs(60))
        .await
        .expect("add twice is a set");
    let mut members = s.index_members(&idx).await.expect("members");
    members.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(members, vec![a.clone(), b.clone()]);
    s.index_remove(&idx, &a).await.expect("remove");
    assert_eq!(
        s.index_members(&idx).await.expect("members"),
        vec![b.clone()]
    );
    s.index_remove(&idx, &b).await.expect("remove");
    assert!(s.index_members(&idx).await.expect("members").is_empty());
    let short = IndexKey(format!("{}-short", idx.0));
    s.index_add(&short, &a, Duration::from_millis(100))
        .await
        .expect("add");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        s.index_members(&short).await.expect("members").is_empty(),
        "indexes expire"
    );
}

async fn delete_all_by_prefix(s: &dyn SessionStore) {
    let prefix = format!("z{}:", crate::crypto::random::token::<4>().expect("rng"));
    for i in 0..25 {
        let k = StoreKey(format!("{prefix}{i}"));
        s.set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .expect("set");
    }
    let other = key("survivor");
    s.set(&other, Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(s.delete_all(&prefix).await.expect("delete_all"), 25);
    assert!(
        s.get(&StoreKey(format!("{prefix}3")))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        s.get(&other).await.expect("get").is_some(),
        "other prefixes untouched"
    );
    assert_eq!(s.delete_all(&prefix).await.expect("delete_all"), 0);
}
