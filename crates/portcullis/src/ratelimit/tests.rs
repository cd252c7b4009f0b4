//! The in-process limiter and the handler-facing API; the Redis limiter's tests are in `redis.rs`.

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::response::IntoResponse;
use http::{HeaderMap, StatusCode, header};

use super::*;

fn memory() -> Arc<dyn RateLimiter> {
    Arc::new(MemoryLimiter::new())
}

fn ip(s: &str) -> LimitKey {
    LimitKey::ip(s.parse::<IpAddr>().expect("ip"))
}

const THREE_PER_30S: Rate = Rate {
    count: 3,
    per: Duration::from_secs(30),
};

#[tokio::test]
async fn allows_exactly_count_then_refuses_with_the_refill_interval() {
    let l = memory();
    let k = ip("203.0.113.5");
    for i in 0..3 {
        l.check(Bucket::LoginPerIp, &k, THREE_PER_30S)
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: {e:?}"));
    }
    match l.acquire(Bucket::LoginPerIp, &k, THREE_PER_30S).await {
        Ok(Decision::Refused { retry_after }) => assert!(
            retry_after > Duration::from_secs(9) && retry_after <= Duration::from_secs(10),
            "per/count is 10 s: {retry_after:?}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        l.check(Bucket::LoginPerIp, &k, THREE_PER_30S).await,
        Err(ApiError::TooManyRequests {
            retry_after_secs: 10
        })
    );
}

#[tokio::test]
async fn keys_and_buckets_are_independent() {
    let l = memory();
    let one = Rate {
        count: 1,
        per: Duration::from_secs(60),
    };
    let a = ip("203.0.113.5");
    l.check(Bucket::LoginPerIp, &a, one).await.expect("a");
    assert!(l.check(Bucket::LoginPerIp, &a, one).await.is_err());
    l.check(Bucket::LoginPerIp, &ip("203.0.113.6"), one)
        .await
        .expect("another IP");
    l.check(Bucket::HandshakePerIp, &a, one)
        .await
        .expect("another bucket");
    l.check(Bucket::HandshakePerUsername, &a, one)
        .await
        .expect("another bucket");
}

#[tokio::test]
async fn tokens_come_back_and_idle_keys_are_swept() {
    let ml = MemoryLimiter::new();
    let l: Arc<dyn RateLimiter> = Arc::new(ml.clone());
    let rate = Rate {
        count: 2,
        per: Duration::from_millis(200),
    };
    let k = LimitKey::username("carol");
    l.check(Bucket::HandshakePerUsername, &k, rate)
        .await
        .expect("1st");
    l.check(Bucket::HandshakePerUsername, &k, rate)
        .await
        .expect("2nd");
    // Sub-second waits still say 1: Retry-After has whole seconds only, and 0 would invite a
    // busy loop.
    assert_eq!(
        l.check(Bucket::HandshakePerUsername, &k, rate).await,
        Err(ApiError::TooManyRequests {
            retry_after_secs: 1
        })
    );
    assert_eq!(ml.tracked_keys(), 1);
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if l.check(Bucket::HandshakePerUsername, &k, rate)
            .await
            .is_ok()
        {
            back = true;
            break;
        }
    }
    assert!(back, "a token is back after per/count");
    let mut swept = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ml.purge();
        if ml.tracked_keys() == 0 {
            swept = true;
            break;
        }
    }
    assert!(swept, "a full bucket is forgotten");
}

#[tokio::test]
async fn sweeper_stops_with_the_limiter() {
    let l = MemoryLimiter::new();
    let weak = l.weak_inner();
    drop(l);
    assert!(weak.upgrade().is_none());
}

#[test]
fn usernames_are_trimmed_and_lower_cased() {
    assert_eq!(normalize_username("  Alice\t"), "alice");
    assert_eq!(normalize_username("ÉLODIE"), "élodie");
    let alice = LimitKey::username("alice");
    for v in ["Alice", "ALICE", " alice ", "\talIce\n"] {
        assert_eq!(LimitKey::username(v), alice, "{v:?}");
    }
    assert_ne!(LimitKey::username("alice2"), alice);
    assert_ne!(LimitKey::username("al ice"), alice);
    // Usernames and addresses never collide, even for the same text.
    assert_ne!(LimitKey::username("192.0.2.1"), ip("192.0.2.1"));
}

#[tokio::test]
async fn case_tricks_share_the_username_budget() {
    let l = memory();
    let one = Rate {
        count: 1,
        per: Duration::from_secs(60),
    };
    l.check(
        Bucket::HandshakePerUsername,
        &LimitKey::username("Dave"),
        one,
    )
    .await
    .expect("first");
    assert!(
        l.check(
            Bucket::HandshakePerUsername,
            &LimitKey::username(" DAVE"),
            one
        )
        .await
        .is_err()
    );
}

#[test]
fn addresses_ipv4_per_address_ipv6_per_64() {
    assert_ne!(ip("192.0.2.1"), ip("192.0.2.2"));
    assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
    assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff:0:0:9"));
    assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
}

#[test]
fn client_key_honours_trusted_proxies() {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", "198.51.100.7".parse().expect("header"));
    let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    assert_eq!(LimitKey::client_ip(proxy, &h, &trusted), ip("198.51.100.7"));
    // From an untrusted peer the header is ignored: it cannot pick someone else's budget.
    assert_eq!(LimitKey::client_ip(proxy, &h, &[]), ip("10.0.0.1"));
}

#[test]
fn keys_are_digests() {
    let k = LimitKey::username("alice");
    assert_eq!(k.encoded().len(), 22);
    assert!(!format!("{k:?}").contains("alice"));
}

#[test]
fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::from_secs(10)), 10);
    assert_eq!(retry_after_secs(Duration::from_millis(10_001)), 11);
}

#[test]
fn too_many_requests_is_a_429_problem_with_retry_after() {
    let resp = ApiError::TooManyRequests {
        retry_after_secs: 7,
    }
    .into_response();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    // Never 0, whatever a caller builds.
    let resp = ApiError::TooManyRequests {
        retry_after_secs: 0,
    }
    .into_response();
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn too_many_requests_body() {
    let resp = ApiError::TooManyRequests {
        retry_after_secs: 3,
    }
    .into_response();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["type"], "urn:portcullis:problem:rate-limited");
    assert_eq!(v["status"], 429);
}

#[test]
fn limiter_follows_the_store() {
    assert!(
        format!("{:?}", for_store(&StoreConfig::Memory).expect("memory"))
            .starts_with("MemoryLimiter")
    );
    assert!(
        format!(
            "{:?}",
            for_store(&StoreConfig::File("/nonexistent/x.redb".into())).expect("file")
        )
        .starts_with("MemoryLimiter")
    );
    let redis = crate::config::RedisConfig {
        topology: crate::config::RedisTopology::Standalone("redis://127.0.0.1:1".into()),
        username: None,
        password: None,
        timeout: Duration::from_secs(1),
        key_prefix: "portcullis:".into(),
        ca_pem: None,
    };
    assert!(
        format!(
            "{:?}",
            for_store(&StoreConfig::Redis(redis)).expect("redis")
        )
        .starts_with("RedisLimiter")
    );
}
