//! Identify pacing shared by every gateway process of the bot.
//!
//! Discord lets one shard per `max_concurrency` bucket (`shard_id %
//! max_concurrency`) identify every 5 seconds, across *all* of the bot's
//! connections; a faster identify is refused with an invalid session. A
//! queue inside one process (Twilight's [`InMemoryQueue`]) cannot see the
//! identifies of another, so two gateway processes starting together would
//! trip the limit.
//!
//! Each bucket is therefore a slot in the gateway's NATS bucket
//! (`identify.{bucket}`): a shard identifies only after taking its bucket's
//! slot with a compare-and-set, and the slot is freed 5 seconds after the
//! identify was allowed. A process that dies holding a slot leaves it behind;
//! others take it once they have seen it unchanged for twice the identify
//! interval (observed, as shard leases are: NATS 2.9 has no per-key TTL).
//!
//! The daily session-start limit is shared the same way: one counter
//! (`identify.starts`), seeded from `GET /gateway/bot` by the first process
//! and decremented with a compare-and-set by every identify of every
//! process; at zero, identifies wait for the reset Discord announced
//! (exceeding the limit can get the bot's token reset). Without NATS for
//! [`GIVE_UP_AFTER`], a shard identifies on the local queue alone, which
//! still counts the limit as this process last read it: identifying late
//! is better than never.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use twilight_gateway::queue::{InMemoryQueue, Queue, IDENTIFY_DELAY};

/// How often a busy slot is looked at again.
const POLL: Duration = Duration::from_millis(250);
/// A slot unchanged for this long was left by a process that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(10);
/// How long NATS may fail before a shard identifies on the local queue alone.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);

/// The queue every shard of this process identifies through.
#[derive(Clone, Debug)]
pub struct FleetQueue {
    local: InMemoryQueue,
    shared: Option<Arc<Slots>>,
}

#[derive(Debug)]
struct Slots {
    store: Store,
    holder: String,
    max_concurrency: u32,
    /// Discord's session-start limit as this process read it at start.
    limit: StartLimit,
    /// How long a slot is held after its identify was allowed: Discord's
    /// 5 seconds (shorter only against a simulator configured so).
    hold: Duration,
}

impl FleetQueue {
    /// Only the process's own queue (`IDENTIFY_QUEUE=unlimited`, or no
    /// bucket to share through).
    pub fn local(local: InMemoryQueue) -> Self {
        Self {
            local,
            shared: None,
        }
    }

    /// Identifies paced by the slots in `store`, shared with every process
    /// that uses the same bucket.
    pub fn shared(
        local: InMemoryQueue,
        store: Store,
        holder: String,
        max_concurrency: u32,
        limit: StartLimit,
    ) -> Self {
        Self {
            local,
            shared: Some(Arc::new(Slots {
                store,
                holder,
                max_concurrency: max_concurrency.max(1),
                limit,
                hold: IDENTIFY_DELAY,
            })),
        }
    }
}

impl Queue for FleetQueue {
    fn enqueue(&self, shard: u32) -> oneshot::Receiver<()> {
        let Some(slots) = self.shared.clone() else {
            return self.local.enqueue(shard);
        };
        let local = self.local.clone();
        let (allow, allowed) = oneshot::channel();
        tokio::spawn(async move {
            let slot = slots.take(shard).await;
            if slot.is_some() {
                slots.count_start(shard).await;
            }
            // The shard may have given up waiting (it was stopped): then
            // the slot is freed at once rather than held for nothing.
            if local.enqueue(shard).await.is_ok() && allow.send(()).is_ok() {
                tokio::time::sleep(slots.hold).await;
            }
            if let Some((key, revision)) = slot {
                slots.free(&key, revision).await;
            }
        });
        allowed
    }
}

impl Slots {
    /// Waits for the shard's bucket slot; `None` when NATS failed for too
    /// long (the shard then identifies on the local queue alone).
    async fn take(&self, shard: u32) -> Option<(String, u64)> {
        let key = format!("identify.{}", shard % self.max_concurrency);
        let value = bytes::Bytes::from(self.holder.clone());
        let started = Instant::now();
        let mut seen: Option<(u64, Instant)> = None;
        let mut warned = false;
        loop {
            let expected = match self.store.entry(&key).await {
                Ok(None) => Some(0),
                Ok(Some(entry)) if entry.operation != Operation::Put => Some(entry.revision),
                Ok(Some(entry)) => match seen {
                    Some((revision, since)) if revision == entry.revision => {
                        (since.elapsed() >= ABANDONED_AFTER).then_some(entry.revision)
                    }
                    _ => {
                        seen = Some((entry.revision, Instant::now()));
                        None
                    }
                },
                Err(error) => {
                    if started.elapsed() >= GIVE_UP_AFTER {
                        tracing::warn!(shard, %error, "cannot reach the shared identify queue; identifying on this process's queue alone");
                        return None;
                    }
                    if !warned {
                        warned = true;
                        tracing::warn!(shard, %error, "cannot read the shared identify queue; retrying");
                    }
                    None
                }
            };
            if let Some(revision) = expected {
                match self.store.update(&key, value.clone(), revision).await {
                    Ok(revision) => return Some((key, revision)),
                    // Another process took it first.
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                    Err(error) => {
                        if started.elapsed() >= GIVE_UP_AFTER {
                            tracing::warn!(shard, %error, "cannot write the shared identify queue; identifying on this process's queue alone");
                            return None;
                        }
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes one session start from the shared counter, waiting for the
    /// reset when none is left. Gives up (the local queue still counts)
    /// when NATS fails for [`GIVE_UP_AFTER`].
    async fn count_start(&self, shard: u32) {
        const KEY: &str = "identify.starts";
        let started = Instant::now();
        let mut warned_empty = false;
        loop {
            let now = crate::now_ms();
            let (current, revision) = match self.store.entry(KEY).await {
                Ok(Some(entry)) if entry.operation == Operation::Put => {
                    match serde_json::from_slice::<Starts>(&entry.value) {
                        Ok(starts) if starts.reset_at_ms > now => (starts, entry.revision),
                        // Reset since (or unreadable): Discord's figures as read here.
                        _ => (self.limit.starts(), entry.revision),
                    }
                }
                Ok(Some(entry)) => (self.limit.starts(), entry.revision),
                Ok(None) => (self.limit.starts(), 0),
                Err(error) => {
                    if started.elapsed() >= GIVE_UP_AFTER {
                        tracing::warn!(shard, %error, "cannot read the shared session-start count; counting on this process's queue alone");
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if current.remaining == 0 {
                let wait =
                    Duration::from_millis(u64::try_from(current.reset_at_ms - now).unwrap_or(0));
                if !warned_empty {
                    warned_empty = true;
                    tracing::error!(
                        shard,
                        reset_in_s = wait.as_secs(),
                        "Discord's daily session-start limit is used up; identifies wait for its reset"
                    );
                }
                tokio::time::sleep(wait.clamp(POLL, Duration::from_secs(60))).await;
                continue;
            }
            let next = Starts {
                remaining: current.remaining - 1,
                reset_at_ms: current.reset_at_ms,
            };
            let body = serde_json::to_vec(&next).unwrap_or_default();
            match self.store.update(KEY, body.into(), revision).await {
                Ok(_) => return,
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(error) => {
                    if started.elapsed() >= GIVE_UP_AFTER {
                        tracing::warn!(shard, %error, "cannot write the shared session-start count; counting on this process's queue alone");
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    async fn free(&self, key: &str, revision: u64) {
        if let Err(error) = self.store.delete_expect_revision(key, Some(revision)).await {
            // Others take it over once they have seen it unchanged long enough.
            tracing::debug!(%key, %error, "cannot free an identify slot");
        }
    }
}

/// Discord's session-start limit (`GET /gateway/bot`), as read at start.
#[derive(Clone, Copy, Debug)]
pub struct StartLimit {
    pub remaining: u32,
    /// When `remaining` goes back to the daily total, Unix ms.
    pub reset_at_ms: i64,
}

impl StartLimit {
    fn starts(self) -> Starts {
        Starts {
            remaining: self.remaining,
            reset_at_ms: self.reset_at_ms,
        }
    }
}

/// The shared count (`identify.starts`).
#[derive(Debug, Serialize, Deserialize)]
struct Starts {
    remaining: u32,
    reset_at_ms: i64,
}
