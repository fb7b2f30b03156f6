//! A TTL cache of chain reads.
//!
//! Chain state is public and the same for every community, so one cache per
//! chain is shared by all tenants: two communities gating on the same token
//! cost one read per holder, while their results stay separate because
//! results are computed per rule set.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries,
            entries: HashMap::new(),
        }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let (stored, value) = self.entries.get(key)?;
        (now.saturating_duration_since(*stored) < self.ttl).then(|| value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (stored, _)| now.saturating_duration_since(*stored) < ttl);
            // Still full of live entries: skip caching rather than evict
            // something that is about to be read again.
            if self.entries.len() >= self.max_entries {
                return;
            }
        }
        self.entries.insert(key, (now, value));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_within_ttl_and_miss_after() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::from_secs(60), 10);
        c.insert("a", 1, t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(60)), None);
        assert_eq!(c.get(&"b", t0), None);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::ZERO, 10);
        c.insert("a", 1, t0);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn full_cache_drops_expired_entries_first() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::from_secs(10), 2);
        c.insert("old", 1, t0);
        c.insert("live", 2, t0 + Duration::from_secs(5));
        c.insert("new", 3, t0 + Duration::from_secs(11));
        let now = t0 + Duration::from_secs(11);
        assert_eq!(c.get(&"old", now), None);
        assert_eq!(c.get(&"live", now), Some(2));
        assert_eq!(c.get(&"new", now), Some(3));
        c.insert("overflow", 4, now);
        assert_eq!(c.get(&"overflow", now), None, "full of live entries");
        assert_eq!(c.len(), 2);
    }
}
