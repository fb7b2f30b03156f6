//! Snowflake ids for simulated objects.
//!
//! Ids are built from per-kind counters instead of the clock so that a
//! scenario produces the same ids on every run. Consecutive counter values sit
//! in the timestamp bits, which is what Discord shards on
//! (`(id >> 22) % shard_count`), so consecutively created guilds spread
//! round-robin over the shards.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds after the Discord epoch (2015) of the first simulated id:
/// early 2024, so ids look like current ones.
const BASE_TIMESTAMP: u64 = 283_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Guild = 1,
    User = 2,
    Role = 3,
    Channel = 4,
    Interaction = 5,
    Message = 6,
    Command = 7,
}

#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    counters: [AtomicU64; 8],
}

impl IdGenerator {
    pub(crate) fn next(&self, kind: Kind) -> u64 {
        let n = self.counters[kind as usize].fetch_add(1, Ordering::Relaxed);
        // Low bits keep kinds apart, so ids are unique across kinds too.
        ((BASE_TIMESTAMP + n) << 22) | kind as u64
    }
}

/// The shard Discord routes a guild to.
pub fn shard_for_guild(guild_id: u64, shard_count: u32) -> u32 {
    if shard_count == 0 {
        return 0;
    }
    ((guild_id >> 22) % u64::from(shard_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_guilds_spread_round_robin_over_shards() {
        let ids = IdGenerator::default();
        let shards: Vec<u32> = (0..6)
            .map(|_| shard_for_guild(ids.next(Kind::Guild), 3))
            .collect();
        let mut sorted = shards.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 0, 1, 1, 2, 2], "{shards:?}");
    }

    #[test]
    fn kinds_never_collide() {
        let ids = IdGenerator::default();
        let a = ids.next(Kind::Guild);
        let b = ids.next(Kind::User);
        assert_ne!(a, b);
        assert_eq!(a >> 22, b >> 22);
    }
}
