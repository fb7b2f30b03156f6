//! Discord lets one shard per `max_concurrency` bucket (`shard_id %
//! max_concurrency`) identify every 5 seconds; a faster identify gets op 9.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct IdentifyLimiter {
    interval: Duration,
    max_concurrency: u32,
    last: HashMap<u32, Instant>,
    pub(crate) total: u64,
}

impl IdentifyLimiter {
    pub(crate) fn new(interval: Duration, max_concurrency: u32) -> Self {
        Self {
            interval,
            max_concurrency: max_concurrency.max(1),
            last: HashMap::new(),
            total: 0,
        }
    }

    /// Takes the bucket's slot for `shard_id` if it is free.
    pub(crate) fn try_acquire(&mut self, shard_id: u32, now: Instant) -> bool {
        let bucket = shard_id % self.max_concurrency;
        if let Some(last) = self.last.get(&bucket) {
            if now.duration_since(*last) < self.interval {
                return false;
            }
        }
        self.last.insert(bucket, now);
        self.total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identify_per_bucket_per_interval() {
        let mut limiter = IdentifyLimiter::new(Duration::from_secs(5), 2);
        let t0 = Instant::now();
        assert!(limiter.try_acquire(0, t0));
        assert!(limiter.try_acquire(1, t0), "shard 1 is in another bucket");
        assert!(
            !limiter.try_acquire(2, t0),
            "shard 2 shares shard 0's bucket"
        );
        assert!(limiter.try_acquire(2, t0 + Duration::from_secs(5)));
        assert_eq!(limiter.total, 3);
    }
}
