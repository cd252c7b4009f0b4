//! Attack suite, leakage: every token the real provider issued (access, refresh, ID token, from
//! the code exchange and from refreshes) and the client secret are absent from every response the
//! browser got (status, headers, `Location`, body), from every log line, and from store dumps:
//! real Redis (`KEYS` + `GET`/`SMEMBERS`/`DUMP` of every key), the embedded file store's bytes and
//! the memory store's raw entries. Identical records seal to different bytes.

mod common;

use common::{
    COOKIE, Options, Stack,
    leak::{assert_absent, assert_logs_clean, dump, issued_tokens, secrets},
};
use http::Method;
use portcullis::crypto::{
    keyring::KeyRing,
    seal::{self, Purpose},
};
use testkit::{
    browser::Browser,
    redis::{RedisOptions, RedisServer, Reply},
};

/// A session's whole life, with every response the browser saw; the access token lives 10 s
/// and the refresh skew is 30 s, so every API call refreshes.
async fn exercise(stack: &Stack) -> Vec<String> {
    let mut seen = Vec::new();
    let alice = Browser::new();
    let start = alice
        .get(&stack.url("/bff/login?returnTo=/home"))
        .await
        .expect("login start");
    seen.push(dump(&start));
    let outcome = Browser::new()
        .login_via_form(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .expect("login");
    seen.push(dump(&outcome.callback_response));
    let cookie = stack.login(&alice).await;
    let csrf = stack.csrf(&alice).await;
    let t = [("x-csrf-token", csrf.as_str())];
    let t: &[(&str, &str)] = &t;
    let none: &[(&str, &str)] = &[];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let requests: Vec<(Method, &str, Headers)> = vec![
        (Method::GET, "/bff/session", none),
        (Method::GET, "/api/orders/1", none),
        (Method::POST, "/api/orders/echo-body", t),
        (Method::GET, "/api/status/401", none),
        (Method::GET, "/api/status/500", none),
        (Method::GET, "/dead/x", none),
        (Method::GET, "/api/orders/2", none),
        (Method::POST, "/api/orders/3", t),
        (Method::GET, "/bff/callback?state=forged&code=forged", none),
        (Method::GET, "/bff/nope", none),
        (Method::GET, "/bff/session", none),
    ];
    for (m, path, hs) in requests {
        let r = alice
            .request(m, &stack.url(path), hs, "{\"hello\":1}")
            .await
            .expect(path);
        seen.push(dump(&r));
    }
    assert!(
        stack.session_record(&cookie).await.is_some(),
        "the session is still alive"
    );
    seen
}

async fn logout(stack: &Stack, alice: &Browser) -> String {
    let csrf = stack.csrf(alice).await;
    let r = alice
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout");
    assert!(r.status.is_success(), "{}", r.text());
    dump(&r)
}

fn short_tokens() -> Options {
    Options {
        access_token_ttl: 10,
        refresh_skew: "30s",
        ..Options::default()
    }
}

/// Every key of the Redis database, with its value(s) and its `DUMP` serialisation.
async fn redis_dump(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let Reply::Array(keys) = redis.command(&["KEYS", "*"]).await.expect("KEYS") else {
        panic!("KEYS is an array");
    };
    let mut out = Vec::new();
    for k in keys.iter().filter_map(|k| k.as_str().map(str::to_owned)) {
        let ty = redis.command(&["TYPE", &k]).await.expect("TYPE");
        let mut bytes = k.clone().into_bytes();
        match ty.as_str() {
            Some("string") => {
                if let Reply::Bulk(b) = redis.command(&["GET", &k]).await.expect("GET") {
                    bytes.extend(b);
                }
            }
            Some("set") => {
                if let Reply::Array(m) = redis.command(&["SMEMBERS", &k]).await.expect("SMEMBERS") {
                    for v in m {
                        if let Reply::Bulk(b) = v {
                            bytes.extend(b);
                        }
                    }
                }
            }
            _ => {}
        }
        if let Reply::Bulk(b) = redis.command(&["DUMP", &k]).await.expect("DUMP") {
            bytes.extend(b);
        }
        out.push((k, bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_responses_logs_or_a_redis_dump() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis-server");
    let stack = Stack::start_with(Options {
        session_extra: format!(
            "store = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"2s\"",
            redis.url()
        ),
        ..short_tokens()
    })
    .await;
    let mut seen = exercise(&stack).await;
    let dumped = redis_dump(&redis).await;
    assert!(
        dumped.iter().any(|(k, _)| k.contains("{s:")),
        "the dump holds sessions: {:?}",
        dumped.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let alice = Browser::new();
    stack.login(&alice).await;
    seen.push(logout(&stack, &alice).await);

    let issued = issued_tokens(&stack.idp).await;
    let stats = stack.idp.stats().await.expect("stats");
    assert!(
        stats.refresh_grants() >= 1,
        "the scenario refreshed: {stats:?}"
    );
    assert!(
        issued.len() >= 8,
        "code exchanges and refreshes issued tokens: {}",
        issued.len()
    );
    // The capture is real: every bearer the upstream received is one of them.
    let bearers: Vec<String> = stack
        .upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert!(!bearers.is_empty());
    for b in &bearers {
        let t = b.strip_prefix("Bearer ").expect("bearer");
        assert!(
            issued.iter().any(|i| i == t),
            "an unknown bearer reached the upstream"
        );
    }
    let secrets = secrets(&stack.idp).await;
    let mut haystacks: Vec<(String, Vec<u8>)> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("response #{i}"), s.clone().into_bytes()))
        .collect();
    haystacks.extend(
        dumped
            .into_iter()
            .map(|(k, v)| (format!("redis key {k}"), v)),
    );
    let refs: Vec<(&str, &[u8])> = haystacks
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    assert_absent(&secrets, &refs);
    assert_logs_clean(&stack.idp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_the_file_store() {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-leak-{}",
        portcullis::crypto::random::token::<6>().expect("rng")
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("sessions.redb");
    let stack = Stack::start_with(Options {
        session_extra: format!("store = \"file\"\nfile_path = \"{}\"", file.display()),
        ..short_tokens()
    })
    .await;
    let seen = exercise(&stack).await;
    let bytes = std::fs::read(&file).expect("read the store file");
    assert!(!bytes.is_empty());
    let secrets = secrets(&stack.idp).await;
    let mut haystacks: Vec<(&str, &[u8])> = vec![("the store file", bytes.as_slice())];
    haystacks.extend(seen.iter().map(|s| ("a response", s.as_bytes())));
    assert_absent(&secrets, &haystacks);
    assert_logs_clean(&stack.idp).await;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_entries_hold_no_token_and_identical_records_seal_differently() {
    let stack = Stack::start_with(short_tokens()).await;
    let seen = exercise(&stack).await;
    let alice = Browser::new();
    let ticket = stack.login(&alice).await;
    let session = stack.session_record(&ticket).await.expect("session");
    // The record really holds a provider token, so its absence from the raw entry means something.
    let issued = issued_tokens(&stack.idp).await;
    assert!(issued.contains(&session.record.access_token));
    let store = stack.state().sessions.store();
    let raw1 = store
        .get(&session.key)
        .await
        .expect("store")
        .expect("entry")
        .value;
    let secrets = secrets(&stack.idp).await;
    let mut haystacks: Vec<(&str, &[u8])> = vec![("the memory store entry", &raw1[..])];
    haystacks.extend(seen.iter().map(|s| ("a response", s.as_bytes())));
    assert_absent(&secrets, &haystacks);
    assert!(
        !raw1.windows(ticket.len()).any(|w| w == ticket.as_bytes()),
        "the ticket is in the entry"
    );
    // The same record saved again seals to different bytes, and still opens to the same record.
    stack.state().sessions.save(&session).await.expect("save");
    let raw2 = store
        .get(&session.key)
        .await
        .expect("store")
        .expect("entry")
        .value;
    assert_ne!(raw1, raw2, "identical records sealed to identical bytes");
    let reopened = stack.session_record(&ticket).await.expect("session");
    assert_eq!(reopened.record.access_token, session.record.access_token);
    assert_eq!(
        alice
            .get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        200
    );
    // And at the sealing layer: same key, purpose, secret, store key and plaintext, 64 times.
    let ring = KeyRing::parse(&KeyRing::generate_encoded().expect("rng")).expect("ring");
    let mut outputs = std::collections::HashSet::new();
    for _ in 0..64 {
        let sealed = seal::seal(
            &ring,
            Purpose::Session,
            b"secret",
            b"key",
            b"same plaintext",
        )
        .expect("seal");
        assert!(!sealed.windows(14).any(|w| w == b"same plaintext"));
        let opened = seal::open(&ring, Purpose::Session, b"secret", b"key", &sealed).expect("open");
        assert_eq!(opened, b"same plaintext");
        outputs.insert(sealed);
    }
    assert_eq!(outputs.len(), 64, "every sealing is distinct");
    let _ = COOKIE;
    assert_logs_clean(&stack.idp).await;
}
