//! Snowflake ids for simulated objects.
//!
//! Ids are built from per-kind counters instead of the clock so that a
//! scenario produces the same ids on every run. Consecutive counter values sit
//! in the timestamp bits, which is what Discord shards on
//! (`(id >> 22) % shard_count`), so consecutively created guilds spread
//! round-robin over the shards.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use wire::{
    ChannelMarker, CommandMarker, GuildId, GuildMarker, Id, InteractionMarker, MessageMarker,
    RoleMarker, UserMarker,
};

/// Milliseconds after the Discord epoch (2015) of the first simulated id:
/// early 2024, so ids look like current ones.
const BASE_TIMESTAMP: u64 = 283_000_000_000;

/// The kinds of object the simulator makes ids for. The kind is in the id's
/// low bits, which keeps kinds apart; it is never 0, so neither is an id.
pub(crate) trait Generated {
    const KIND: NonZeroU64;
    /// Index of the kind's counter.
    const COUNTER: usize;
}

macro_rules! generated {
    ($($marker:ty => $kind:literal),* $(,)?) => {$(
        impl Generated for $marker {
            const KIND: NonZeroU64 = NonZeroU64::MIN.saturating_add($kind - 1);
            const COUNTER: usize = $kind;
        }
    )*};
}

generated! {
    GuildMarker => 1,
    UserMarker => 2,
    RoleMarker => 3,
    ChannelMarker => 4,
    InteractionMarker => 5,
    MessageMarker => 6,
    CommandMarker => 7,
}

#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    counters: [AtomicU64; 8],
}

impl IdGenerator {
    pub(crate) fn next<M: Generated>(&self) -> Id<M> {
        let n = self.counters[M::COUNTER].fetch_add(1, Ordering::Relaxed);
        Id::from_nonzero(M::KIND | ((BASE_TIMESTAMP + n) << 22))
    }
}

/// The shard Discord routes a guild to.
pub fn shard_for_guild(guild_id: GuildId, shard_count: u32) -> u32 {
    if shard_count == 0 {
        return 0;
    }
    ((guild_id.get() >> 22) % u64::from(shard_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_guilds_spread_round_robin_over_shards() {
        let ids = IdGenerator::default();
        let shards: Vec<u32> = (0..6).map(|_| shard_for_guild(ids.next(), 3)).collect();
        let mut sorted = shards.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 0, 1, 1, 2, 2], "{shards:?}");
    }

    #[test]
    fn kinds_never_collide() {
        let ids = IdGenerator::default();
        let a: GuildId = ids.next();
        let b: wire::UserId = ids.next();
        assert_ne!(a.get(), b.get());
        assert_eq!(a.get() >> 22, b.get() >> 22);
    }
}
