//! Session scenarios (tower-sessions style) run against every store backend: each backend's
//! tests call [`run_all`] with a fresh store.

use std::{sync::Arc, time::Duration};

use super::{SessionManager, SessionRecord, ticket::Ticket};
use crate::{crypto::keyring::KeyRing, oidc::now_unix, store::SessionStore};

fn ring() -> KeyRing {
    KeyRing::parse(&KeyRing::generate_encoded().expect("rng")).expect("keys")
}

fn manager(store: &Arc<dyn SessionStore>, keys: &KeyRing, idle_ms: u64) -> SessionManager {
    SessionManager::new(
        Arc::clone(store),
        keys.clone(),
        Duration::from_secs(3600),
        Duration::from_millis(idle_ms),
    )
}

/// A minimal record for `sub`, ending `absolute_in` seconds from now.
pub(super) fn record(sub: &str, absolute_in: u64) -> SessionRecord {
    let now = now_unix();
    SessionRecord {
        sub: sub.into(),
        iss: "https://idp".into(),
        sid: None,
        user: Default::default(),
        claims: Default::default(),
        scopes: Vec::new(),
        csrf_token: "c".into(),
        access_token: "at".into(),
        access_expires_at: None,
        refresh_token: None,
        id_token: None,
        created_at: now,
        absolute_expires_at: now + absolute_in,
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        crate::crypto::random::token::<6>().expect("rng")
    )
}

pub async fn run_all(store: Arc<dyn SessionStore>) {
    let keys = ring();
    let m = manager(&store, &keys, 60_000);
    sealed_at_rest(&m).await;
    bogus_and_foreign_tickets(&store, &m).await;
    idle_timeout(&store, &keys).await;
    absolute_lifetime(&m).await;
    id_rotation(&m).await;
    concurrent_writes(&m).await;
    retired_key(&store, &m).await;
    index_lookups(&m).await;
    an_ended_session_stays_ended(&m).await;
    open_cache_follows_the_store(&store, &keys).await;
}

async fn sealed_at_rest(m: &SessionManager) {
    let sub = unique("plaintext-check");
    let s = m.create(record(&sub, 3600)).await.expect("create");
    let raw = m
        .store()
        .get(&s.key)
        .await
        .expect("get")
        .expect("stored")
        .value;
    assert!(
        !raw.windows(sub.len()).any(|w| w == sub.as_bytes()),
        "plaintext never reaches the store"
    );
    assert!(
        !s.key.0.contains(&s.ticket.encode()),
        "the store key is not the ticket"
    );
    let loaded = m.load(s.ticket.clone()).await.expect("load").expect("live");
    assert_eq!(loaded.record.sub, sub);
}

async fn bogus_and_foreign_tickets(store: &Arc<dyn SessionStore>, m: &SessionManager) {
    assert!(
        m.load(Ticket::generate().expect("rng"))
            .await
            .expect("load")
            .is_none(),
        "unknown ticket"
    );
    // A live session under one ticket cannot be reached with a ticket differing in one bit.
    let s = m.create(record("alice", 3600)).await.expect("create");
    let mut flipped = s.ticket.encode().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped =
        Ticket::parse(std::str::from_utf8(&flipped).expect("ascii")).expect("well-formed");
    assert!(m.load(flipped).await.expect("load").is_none());
    // A session sealed by another deployment (another key ring) on the same store is foreign.
    let foreign = manager(store, &ring(), 60_000)
        .create(record("mallory", 3600))
        .await
        .expect("create");
    assert!(
        m.load(foreign.ticket.clone())
            .await
            .expect("load")
            .is_none()
    );
    assert!(
        m.load(s.ticket.clone()).await.expect("load").is_some(),
        "the real one still works"
    );
}

async fn idle_timeout(store: &Arc<dyn SessionStore>, keys: &KeyRing) {
    let m = manager(store, keys, 1000);
    let idle = m.create(record("idle", 3600)).await.expect("create");
    let busy = m.create(record("busy", 3600)).await.expect("create");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            m.load(busy.ticket.clone()).await.expect("load").is_some(),
            "activity keeps it alive"
        );
    }
    assert!(
        m.load(idle.ticket.clone()).await.expect("load").is_none(),
        "idle for 1.5 s > 1 s"
    );
}

async fn absolute_lifetime(m: &SessionManager) {
    let s = m.create(record("short", 1)).await.expect("create");
    // Loaded once, so the last load below is answered from the memo of opened records if at all.
    assert!(m.load(s.ticket.clone()).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(m.load(s.ticket.clone()).await.expect("load").is_none());
    assert!(
        m.store().get(&s.key).await.expect("get").is_none(),
        "expired record deleted"
    );
}

async fn id_rotation(m: &SessionManager) {
    let old = m.create(record("rotating", 3600)).await.expect("create");
    let new = m.create((*old.record).clone()).await.expect("create");
    m.destroy(&old.key).await.expect("destroy");
    assert_ne!(old.ticket.encode(), new.ticket.encode());
    assert!(m.load(old.ticket.clone()).await.expect("load").is_none());
    assert!(m.load(new.ticket.clone()).await.expect("load").is_some());
}

async fn concurrent_writes(m: &SessionManager) {
    let s = Arc::new(m.create(record("writer", 3600)).await.expect("create"));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (m, s) = (m.clone(), Arc::clone(&s));
        tasks.push(tokio::spawn(async move {
            let mut copy = super::Session {
                ticket: s.ticket.clone(),
                key: s.key.clone(),
                record: s.record.clone(),
            };
            std::sync::Arc::make_mut(&mut copy.record).access_token = format!("at-{i}");
            m.save(&copy).await.expect("save");
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let after = m.load(s.ticket.clone()).await.expect("load").expect("live");
    assert!(
        after.record.access_token.starts_with("at-"),
        "one complete write won, none torn"
    );
}

async fn retired_key(store: &Arc<dyn SessionStore>, m: &SessionManager) {
    let s = m.create(record("retired", 3600)).await.expect("create");
    let rotated = manager(store, &ring(), 60_000);
    assert!(
        rotated
            .load(s.ticket.clone())
            .await
            .expect("load")
            .is_none()
    );
}

async fn index_lookups(m: &SessionManager) {
    let alice = unique("alice");
    let mut with_sid = record(&alice, 3600);
    with_sid.sid = Some(unique("sid"));
    let sid = with_sid.sid.clone().expect("sid");
    let a = m.create(with_sid).await.expect("create");
    let b = m.create(record(&alice, 3600)).await.expect("create");
    let bob = unique("bob");
    let c = m.create(record(&bob, 3600)).await.expect("create");
    assert_eq!(
        m.sessions_of_subject("https://idp", &alice)
            .await
            .expect("index")
            .len(),
        2
    );
    assert_eq!(
        m.end_provider_session("https://idp", &sid)
            .await
            .expect("end"),
        1
    );
    assert!(m.load(a.ticket.clone()).await.expect("load").is_none());
    assert!(
        m.load(b.ticket.clone()).await.expect("load").is_some(),
        "other session of alice kept"
    );
    assert_eq!(m.end_subject("https://idp", &alice).await.expect("end"), 1);
    assert!(m.load(b.ticket.clone()).await.expect("load").is_none());
    assert!(
        m.load(c.ticket.clone()).await.expect("load").is_some(),
        "bob untouched"
    );
    assert_eq!(
        m.end_subject("https://other-idp", &bob).await.expect("end"),
        0,
        "issuer is part of the key"
    );
}

/// A refresh rewrites the record it loaded before asking the provider; a logout or revocation
/// that lands meanwhile must win, and the session must not come back (outside the index, where a
/// second revocation would miss it).
async fn an_ended_session_stays_ended(m: &SessionManager) {
    let alice = unique("ended");
    let live = m.create(record(&alice, 3600)).await.expect("create");
    let mut refreshed = m
        .load(live.ticket.clone())
        .await
        .expect("load")
        .expect("live");
    Arc::make_mut(&mut refreshed.record).access_token = "at-refreshed".into();
    assert!(
        m.update(&refreshed).await.expect("update"),
        "a live session is updated"
    );
    let after = m
        .load(live.ticket.clone())
        .await
        .expect("load")
        .expect("live");
    assert_eq!(after.record.access_token, "at-refreshed");

    for end in ["destroy", "end_subject"] {
        let s = m.create(record(&alice, 3600)).await.expect("create");
        let mut refreshed = m.load(s.ticket.clone()).await.expect("load").expect("live");
        Arc::make_mut(&mut refreshed.record).access_token = "at-late".into();
        match end {
            "destroy" => m.destroy(&s.key).await.expect("destroy"),
            _ => {
                m.end_subject("https://idp", &alice).await.expect("end");
            }
        }
        assert!(
            !m.update(&refreshed).await.expect("update"),
            "{end}: not revived"
        );
        assert!(
            m.load(s.ticket.clone()).await.expect("load").is_none(),
            "{end}: still ended"
        );
    }
    assert!(
        m.load(live.ticket.clone()).await.expect("load").is_none(),
        "the subject's first session was ended with the others"
    );
}

/// The memo of opened records (`open_cache`) never answers for the store: whatever another
/// instance (a second manager with its own memo) does to a session is seen on the next load.
async fn open_cache_follows_the_store(store: &Arc<dyn SessionStore>, keys: &KeyRing) {
    let m = manager(store, keys, 60_000);
    let other = manager(store, keys, 60_000);
    let s = m.create(record("memo", 3600)).await.expect("create");
    let first = m.load(s.ticket.clone()).await.expect("load").expect("live");
    let again = m.load(s.ticket.clone()).await.expect("load").expect("live");
    assert!(Arc::ptr_eq(&first.record, &again.record), "opened once");

    // Rewritten elsewhere (a refresh on another instance): the new record, not the memo's.
    let mut rewritten = other
        .load(s.ticket.clone())
        .await
        .expect("load")
        .expect("live");
    Arc::make_mut(&mut rewritten.record).access_token = "at-refreshed".into();
    other.save(&rewritten).await.expect("save");
    let seen = m.load(s.ticket.clone()).await.expect("load").expect("live");
    assert_eq!(seen.record.access_token, "at-refreshed");

    // Tampered with in the store: refused and dropped, not served from the memo.
    store
        .set(
            &s.key,
            bytes::Bytes::from_static(b"not a sealed record"),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
    assert!(m.load(s.ticket.clone()).await.expect("load").is_none());
    assert!(store.get(&s.key).await.expect("get").is_none(), "dropped");

    // Ended elsewhere (logout on another instance): gone here on the next load.
    let t = m.create(record("memo-logout", 3600)).await.expect("create");
    assert!(m.load(t.ticket.clone()).await.expect("load").is_some());
    other.destroy(&t.key).await.expect("destroy");
    assert!(m.load(t.ticket.clone()).await.expect("load").is_none());

    // Ended here: the memo lets go of the record at once.
    let u = m.create(record("memo-local", 3600)).await.expect("create");
    assert!(m.load(u.ticket.clone()).await.expect("load").is_some());
    m.destroy(&u.key).await.expect("destroy");
    assert!(m.load(u.ticket.clone()).await.expect("load").is_none());

    // Turned off: every load opens the record again, with the same outcomes.
    let off = manager(store, keys, 60_000).with_open_cache(0);
    let v = off.create(record("no-memo", 3600)).await.expect("create");
    let a = off
        .load(v.ticket.clone())
        .await
        .expect("load")
        .expect("live");
    let b = off
        .load(v.ticket.clone())
        .await
        .expect("load")
        .expect("live");
    assert!(!Arc::ptr_eq(&a.record, &b.record));
    assert_eq!(a.record.sub, b.record.sub);
}
