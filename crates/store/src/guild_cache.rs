//! Which community each guild belongs to, remembered by the process.
//!
//! Every event names its guild, and its tenant transaction needs the
//! community: asking the database each time costs one more round trip and
//! one more transaction per event, as many again as the events themselves
//! under a flood. A guild's community does not change (communities are
//! deactivated, never deleted), so a found answer is kept, bounded in number
//! and re-read after [`TTL`] so that an operator's repair by hand is seen.
//! A guild without a community is not remembered: it may be provisioned at
//! any moment.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use wire::GuildId;

use crate::TenantId;

/// How long a remembered answer is used before it is read again.
const TTL: Duration = Duration::from_secs(300);

/// Guilds remembered at most (about 60 bytes each).
const CAPACITY: usize = 100_000;

pub(crate) struct GuildCache {
    entries: Mutex<LruCache<GuildId, (TenantId, Instant)>>,
}

impl GuildCache {
    pub(crate) fn new() -> Self {
        GuildCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    pub(crate) fn get(&self, guild: GuildId) -> Option<TenantId> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(&guild) {
            Some((tenant, at)) if at.elapsed() < TTL => Some(*tenant),
            Some(_) => {
                entries.pop(&guild);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, guild: GuildId, tenant: TenantId) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(guild, (tenant, Instant::now()));
    }
}
