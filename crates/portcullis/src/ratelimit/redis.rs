//! Limits shared by every instance: GCRA in Redis, one Lua script (so one atomic step) per check.
//!
//! The state of a bucket is a single value, its theoretical arrival time (TAT, microseconds of
//! Redis server time), at `<prefix>{rl:<bucket>:<22-char digest>}`. One key per script, its
//! name a hash tag, so it works unchanged on Redis Cluster. The key expires (PX) when the bucket
//! would be full again, so Redis holds only clients active within one refill period.
//!
//! The clock is Redis's own (`TIME`), never the instances': skewed instance clocks cannot grant
//! or withhold tokens.
//!
//! Connection handling is the session store's ([`RedisStore`]): lazy, reconnecting, every call
//! under the configured deadline, errors mapped to "unavailable" — which the caller answers with
//! 503 (fail closed; see `<dyn RateLimiter>::check` in the parent module).

use std::{fmt, time::Duration};

use redis::Script;

use super::{Bucket, Decision, LimitKey, LimiterUnavailable, RateLimiter};
use crate::{
    config::{Rate, RedisConfig},
    store::{RedisStore, StoreError},
};

/// KEYS[1] the bucket; ARGV[1] the emission interval T and ARGV[2] the burst window `count·T`,
/// both in µs. Returns 0 (token taken) or the µs until the next token (nothing written).
///
/// Numbers are Lua doubles: exact up to 2^53 µs (285 years), and written back with `%.0f` so
/// a large TAT never turns into `1.7e+15`.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at > now then
  return allow_at - now
end
local ttl = math.ceil((new_tat - now) / 1000)
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
return 0
"#;

/// Far beyond any sensible period, well inside a double's exact integers.
const MAX_US: u64 = 1 << 50;

pub struct RedisLimiter {
    conn: RedisStore,
    prefix: String,
    gcra: Script,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Validates the connection parameters; connects on first use.
    pub fn new(cfg: RedisConfig) -> Result<Self, StoreError> {
        let prefix = cfg.key_prefix.clone();
        Ok(RedisLimiter {
            conn: RedisStore::new(cfg)?,
            prefix,
            gcra: Script::new(GCRA),
        })
    }

    fn key(&self, bucket: Bucket, key: &LimitKey) -> String {
        format!(
            "{}{{rl:{}:{}}}",
            self.prefix,
            bucket.as_str(),
            key.encoded()
        )
    }
}

/// (emission interval, burst window) in µs; the window is an exact multiple of the interval, so
/// a fresh bucket admits exactly `count`.
fn gcra_params(rate: Rate) -> (u64, u64) {
    let count = u64::from(rate.count.max(1));
    let per = u64::try_from(rate.per.as_micros())
        .unwrap_or(MAX_US)
        .min(MAX_US);
    let interval = (per / count).max(1);
    (interval, interval.saturating_mul(count).min(MAX_US))
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(
        &self,
        bucket: Bucket,
        key: &LimitKey,
        rate: Rate,
    ) -> Result<Decision, LimiterUnavailable> {
        let (interval, window) = gcra_params(rate);
        let wait_us: i64 = self
            .conn
            .invoke_script(&self.gcra, &self.key(bucket, key), &[interval, window])
            .await?;
        Ok(match u64::try_from(wait_us) {
            Ok(0) | Err(_) => Decision::Allowed,
            Ok(us) => Decision::Refused {
                retry_after: Duration::from_micros(us),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use testkit::redis::{RedisCluster, RedisOptions, RedisServer};

    use super::*;
    use crate::{config::RedisTopology, http::problem::ApiError};

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

    fn limiter(cfg: &RedisConfig) -> Arc<dyn RateLimiter> {
        Arc::new(RedisLimiter::new(cfg.clone()).expect("limiter"))
    }

    const MINUTE_4: Rate = Rate {
        count: 4,
        per: Duration::from_secs(60),
    };

    #[test]
    fn params_admit_exactly_count() {
        assert_eq!(gcra_params(MINUTE_4), (15_000_000, 60_000_000));
        // 1 s / 3 does not divide: the window shrinks to 3 whole intervals, never 4.
        let (i, w) = gcra_params(Rate {
            count: 3,
            per: Duration::from_secs(1),
        });
        assert_eq!((i, w), (333_333, 999_999));
        assert_eq!(
            gcra_params(Rate {
                count: 10,
                per: Duration::from_nanos(1)
            }),
            (1, 10)
        );
    }

    #[test]
    fn key_is_namespaced_hash_tagged_and_hashed() {
        let mut cfg = config(RedisTopology::Standalone("redis://127.0.0.1:1".into()));
        cfg.key_prefix = "portcullis:".into();
        let l = RedisLimiter::new(cfg).expect("limiter");
        let k = l.key(Bucket::HandshakePerUsername, &LimitKey::username("Alice"));
        assert!(k.starts_with("portcullis:{rl:handshake-user:"), "{k}");
        assert!(k.ends_with('}'));
        assert_eq!(k.len(), "portcullis:{rl:handshake-user:}".len() + 22);
        assert!(!k.to_lowercase().contains("alice"));
        assert_ne!(
            k,
            l.key(Bucket::HandshakePerIp, &LimitKey::username("Alice"))
        );
    }

    /// Exhausts `key` (on instance `a`, `b` alternately) and returns how many were allowed.
    async fn drain(
        a: &Arc<dyn RateLimiter>,
        b: &Arc<dyn RateLimiter>,
        bucket: Bucket,
        key: &LimitKey,
        rate: Rate,
    ) -> usize {
        let mut allowed = 0;
        for i in 0..(rate.count as usize + 3) {
            let l = if i % 2 == 0 { a } else { b };
            match l.check(bucket, key, rate).await {
                Ok(()) => allowed += 1,
                Err(ApiError::TooManyRequests { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        allowed
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_share_one_budget() {
        let server = RedisServer::start(RedisOptions::default())
            .await
            .expect("redis");
        let cfg = config(RedisTopology::Standalone(server.url()));
        let (a, b) = (limiter(&cfg), limiter(&cfg));
        let alice = LimitKey::username("alice");
        assert_eq!(
            drain(&a, &b, Bucket::HandshakePerUsername, &alice, MINUTE_4).await,
            4,
            "4/min over two instances is 4 in all, not 8"
        );
        for l in [&a, &b] {
            match l
                .acquire(Bucket::HandshakePerUsername, &alice, MINUTE_4)
                .await
            {
                Ok(Decision::Refused { retry_after }) => assert!(
                    retry_after > Duration::from_secs(13) && retry_after <= Duration::from_secs(15),
                    "{retry_after:?}"
                ),
                other => panic!("expected a refusal, got {other:?}"),
            }
            assert_eq!(
                l.check(Bucket::HandshakePerUsername, &alice, MINUTE_4)
                    .await,
                Err(ApiError::TooManyRequests {
                    retry_after_secs: 15
                })
            );
        }
        // Case and padding do not make a new budget; another user, bucket or prefix does.
        assert!(
            a.check(
                Bucket::HandshakePerUsername,
                &LimitKey::username("  ALICE "),
                MINUTE_4
            )
            .await
            .is_err()
        );
        a.check(
            Bucket::HandshakePerUsername,
            &LimitKey::username("bob"),
            MINUTE_4,
        )
        .await
        .expect("other user");
        a.check(Bucket::HandshakePerIp, &alice, MINUTE_4)
            .await
            .expect("other bucket");
        let other_prefix = limiter(&config(RedisTopology::Standalone(server.url())));
        other_prefix
            .check(Bucket::HandshakePerUsername, &alice, MINUTE_4)
            .await
            .expect("other deployment");

        // What Redis holds: hashed, namespaced keys that expire, no names.
        let names = match server.command(&["KEYS", "*"]).await.expect("keys") {
            testkit::redis::Reply::Array(v) => v
                .iter()
                .map(|r| r.as_str().expect("utf-8 key").to_owned())
                .collect::<Vec<_>>(),
            other => panic!("KEYS: {other:?}"),
        };
        assert_eq!(names.len(), 4, "{names:?}");
        for n in &names {
            assert!(n.contains("{rl:handshake-"), "{n}");
            assert!(!n.contains("alice") && !n.contains("bob"), "{n}");
            let pttl = server
                .command(&["PTTL", n.as_str()])
                .await
                .expect("pttl")
                .as_int()
                .expect("int");
            assert!(pttl > 0 && pttl <= 60_000, "{n}: {pttl}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_come_back_over_time() {
        let server = RedisServer::start(RedisOptions::default())
            .await
            .expect("redis");
        let l = limiter(&config(RedisTopology::Standalone(server.url())));
        let rate = Rate {
            count: 2,
            per: Duration::from_millis(400),
        };
        let ip = LimitKey::ip("192.0.2.7".parse().expect("ip"));
        l.check(Bucket::LoginPerIp, &ip, rate).await.expect("1st");
        l.check(Bucket::LoginPerIp, &ip, rate).await.expect("2nd");
        assert!(matches!(
            l.check(Bucket::LoginPerIp, &ip, rate).await,
            Err(ApiError::TooManyRequests {
                retry_after_secs: 1
            })
        ));
        let mut back = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if l.check(Bucket::LoginPerIp, &ip, rate).await.is_ok() {
                back = true;
                break;
            }
        }
        assert!(back, "a token is back after per/count");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_shares_the_budget_across_slots() {
        let cluster = RedisCluster::start(3).await.expect("cluster");
        let cfg = config(RedisTopology::Cluster(cluster.urls()));
        let (a, b) = (limiter(&cfg), limiter(&cfg));
        let rate = Rate {
            count: 3,
            per: Duration::from_secs(60),
        };
        // Enough keys to land on every master.
        for i in 0..12 {
            let key = LimitKey::username(&format!("user{i}"));
            assert_eq!(
                drain(&a, &b, Bucket::HandshakePerUsername, &key, rate).await,
                3,
                "user{i}"
            );
        }
        // The keys spread over the masters (the hash tag is fixed by bucket and digest, so this
        // split is deterministic), and there are exactly 12 of them.
        let mut sizes = Vec::new();
        for i in 0..cluster.len() {
            let n = cluster
                .command(i, &["DBSIZE"])
                .await
                .expect("dbsize")
                .as_int()
                .expect("int");
            sizes.push(n);
        }
        assert_eq!(sizes.iter().sum::<i64>(), 12, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_fails_closed_and_recovers() {
        // Never up: refused at once (connection refused), not allowed.
        let port = testkit::free_port();
        let l = limiter(&config(RedisTopology::Standalone(format!(
            "redis://127.0.0.1:{port}"
        ))));
        let key = LimitKey::ip("198.51.100.1".parse().expect("ip"));
        assert_eq!(
            l.check(Bucket::LoginPerIp, &key, MINUTE_4).await,
            Err(ApiError::Unavailable)
        );

        // Up, then stopped: still refused, never waved through; back once Redis is.
        let mut server = RedisServer::start(RedisOptions::default())
            .await
            .expect("redis");
        let l = limiter(&config(RedisTopology::Standalone(server.url())));
        l.check(Bucket::LoginPerIp, &key, MINUTE_4)
            .await
            .expect("up");
        server.stop().await.expect("stop");
        for _ in 0..3 {
            assert_eq!(
                l.check(Bucket::LoginPerIp, &key, MINUTE_4).await,
                Err(ApiError::Unavailable)
            );
        }
        server.restart().await.expect("restart");
        let mut back = false;
        for _ in 0..50 {
            if l.check(Bucket::LoginPerIp, &key, MINUTE_4).await.is_ok() {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(back, "the same limiter reconnects");
    }
}
