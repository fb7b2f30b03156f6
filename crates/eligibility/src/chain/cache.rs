//! A TTL cache of chain reads.
//!
//! Chain state is public and the same for every community, so one cache per
//! chain is shared by all tenants: two communities gating on the same token
//! cost one read per holder, while their results stay separate because
//! results are computed per rule set.

use std::hash::Hash;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Results with one TTL, at most `max_entries` of them.
///
/// Kept in an `lru::LruCache` (a hash map threaded on a linked list) used in
/// insertion order: reads `peek`, which does not reorder, and an insert or a
/// refresh moves its entry to the back. With a single TTL, insertion order is
/// expiry order, so the front entry is always the first to expire, and
/// making room in a full cache is one look at it: if even the oldest entry is
/// still live, all are. That keeps the old semantics (expired entries make
/// way; a cache full of live entries caches nothing new rather than evict
/// something about to be read again) without scanning every entry. `moka`
/// would also do, but brings its own threads and many dependencies for what
/// a single mutex-guarded map does here; `lru` is small and widely used.
pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    entries: LruCache<K, (Instant, V)>,
    examined: u64,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries,
            // Capacity is enforced here, not by the LruCache: it would evict
            // the oldest entry even while live.
            entries: LruCache::unbounded(),
            examined: 0,
        }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let (stored, value) = self.entries.peek(key)?;
        self.is_live(*stored, now).then(|| value.clone())
    }

    /// As [`TtlCache::get`], for a result stored less than `max_age` ago.
    pub fn get_younger_than(&self, key: &K, now: Instant, max_age: Duration) -> Option<V> {
        let (stored, value) = self.entries.peek(key)?;
        let young = now.saturating_duration_since(*stored) < max_age;
        (young && self.is_live(*stored, now)).then(|| value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains(&key) {
            self.examined += 1;
            match self.entries.peek_lru() {
                Some((_, (stored, _))) if !self.is_live(*stored, now) => {
                    self.entries.pop_lru();
                }
                // The oldest entry is live, so every entry is: skip caching
                // rather than evict something that is about to be read again.
                _ => return,
            }
        }
        // `put` moves a refreshed key to the back, keeping expiry order.
        self.entries.put(key, (now, value));
    }

    fn is_live(&self, stored: Instant, now: Instant) -> bool {
        now.saturating_duration_since(stored) < self.ttl
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries looked at to make room, since creation: what an insert into
    /// a full cache costs, counted rather than timed.
    pub fn entries_examined(&self) -> u64 {
        self.examined
    }
}

impl<K: Eq + Hash, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
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
    fn younger_than_a_maximum_age() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut c = TtlCache::new(Duration::from_secs(60), 10);
        c.insert("a", 1, t0);
        let age = Duration::from_secs(30);
        assert_eq!(c.get_younger_than(&"a", at(29), age), Some(1));
        assert_eq!(c.get_younger_than(&"a", at(30), age), None);
        assert_eq!(c.get(&"a", at(30)), Some(1), "still live for other reads");
        assert_eq!(c.get_younger_than(&"a", t0, Duration::ZERO), None);
        assert_eq!(
            c.get_younger_than(&"a", at(61), Duration::from_secs(600)),
            None,
            "never past the TTL"
        );
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::ZERO, 10);
        c.insert("a", 1, t0);
        assert_eq!(c.len(), 0);
    }

    /// Inserting into a full cache looks at a bounded number of entries,
    /// however large the cache: no scan of all of them.
    #[test]
    fn inserting_into_a_full_cache_examines_at_most_one_entry() {
        const FULL: u64 = 200_000;
        const MORE: u64 = 1_000;
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut c = TtlCache::new(ttl, FULL as usize);
        for k in 0..FULL {
            c.insert(k, k, t0);
        }
        assert_eq!(c.len(), FULL as usize);
        assert_eq!(c.entries_examined(), 0, "room to spare until full");

        // Full of live entries: new ones are not cached.
        let live = t0 + Duration::from_secs(1);
        for k in FULL..FULL + MORE {
            c.insert(k, k, live);
        }
        assert!(
            c.entries_examined() <= MORE,
            "{} entries examined for {MORE} inserts",
            c.entries_examined()
        );
        assert_eq!(c.get(&FULL, live), None);
        assert_eq!(c.get(&0, live), Some(0));

        // Everything has expired: each insert takes an expired entry's place.
        let later = t0 + ttl;
        let before = c.entries_examined();
        for k in FULL..FULL + MORE {
            c.insert(k, k, later);
        }
        assert!(
            c.entries_examined() - before <= MORE,
            "{} entries examined for {MORE} inserts",
            c.entries_examined() - before
        );
        assert_eq!(c.len(), FULL as usize, "capacity holds");
        for k in FULL..FULL + MORE {
            assert_eq!(c.get(&k, later), Some(k));
        }
    }

    /// A refreshed entry (a `Fresh` read) expires from its new time, so it
    /// must not stand at the front, hiding an older entry that has expired.
    #[test]
    fn a_refreshed_entry_moves_behind_older_ones() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut c = TtlCache::new(Duration::from_secs(10), 2);
        c.insert("a", 1, at(0));
        c.insert("b", 2, at(1));
        c.insert("a", 3, at(5));
        c.insert("c", 4, at(12));
        assert_eq!(c.get(&"b", at(12)), None, "b expired and made room");
        assert_eq!(c.get(&"a", at(12)), Some(3));
        assert_eq!(c.get(&"c", at(12)), Some(4));
        assert_eq!(c.len(), 2);
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
