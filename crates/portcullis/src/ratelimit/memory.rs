//! In-process limits: one `governor` keyed GCRA limiter per (bucket, rate), made on first use.
//!
//! Keys whose bucket has refilled are indistinguishable from new ones, so a background sweep
//! (which stops with the limiter) drops them and gives the memory back: the key set is bounded
//! by the clients active within one refill period, not by every client ever seen.

use std::{
    fmt,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use super::{Bucket, Decision, LimitKey, LimiterUnavailable, RateLimiter};
use crate::config::Rate;

type Keyed = DefaultKeyedRateLimiter<[u8; 16]>;

#[derive(Default)]
struct Inner {
    limiters: DashMap<(Bucket, u32, Duration), Arc<Keyed>>,
}

#[derive(Clone)]
pub struct MemoryLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("limiters", &self.inner.limiters.len())
            .finish_non_exhaustive()
    }
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// `count` per `per` with bursts of `count`: one token every `per / count`.
pub(super) fn quota(rate: Rate) -> Quota {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let interval = (rate.per / count.get()).max(Duration::from_nanos(1));
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(count)
}

impl MemoryLimiter {
    /// Creates the limiter and, inside a Tokio runtime, its sweeper.
    pub fn new() -> Self {
        let inner = Arc::new(Inner::default());
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&inner)));
        }
        MemoryLimiter { inner }
    }

    fn limiter(&self, bucket: Bucket, rate: Rate) -> Arc<Keyed> {
        let id = (bucket, rate.count, rate.per);
        if let Some(l) = self.inner.limiters.get(&id) {
            return Arc::clone(&l);
        }
        Arc::clone(
            &self
                .inner
                .limiters
                .entry(id)
                .or_insert_with(|| Arc::new(DefaultKeyedRateLimiter::keyed(quota(rate)))),
        )
    }

    /// Forgets keys whose bucket is full again (the sweeper does this periodically).
    pub fn purge(&self) {
        purge(&self.inner);
    }

    #[cfg(test)]
    pub(super) fn weak_inner(&self) -> Weak<impl Sized + use<>> {
        Arc::downgrade(&self.inner)
    }

    /// Keys currently tracked, over all buckets (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.inner.limiters.iter().map(|l| l.len()).sum()
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

fn purge(inner: &Inner) {
    for l in inner.limiters.iter() {
        l.retain_recent();
        l.shrink_to_fit();
    }
}

async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner.upgrade() {
            Some(inner) => purge(&inner),
            None => return,
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn acquire(
        &self,
        bucket: Bucket,
        key: &LimitKey,
        rate: Rate,
    ) -> Result<Decision, LimiterUnavailable> {
        let limiter = self.limiter(bucket, rate);
        Ok(match limiter.check_key(&key.bytes()) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Refused {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            },
        })
    }
}
