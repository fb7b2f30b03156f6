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
//! The process's own [`InMemoryQueue`] still counts the daily session-start
//! limit. Without NATS for [`GIVE_UP_AFTER`], a shard identifies on the
//! local queue alone: identifying late is better than never.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
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
    ) -> Self {
        Self {
            local,
            shared: Some(Arc::new(Slots {
                store,
                holder,
                max_concurrency: max_concurrency.max(1),
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

    async fn free(&self, key: &str, revision: u64) {
        if let Err(error) = self.store.delete_expect_revision(key, Some(revision)).await {
            // Others take it over once they have seen it unchanged long enough.
            tracing::debug!(%key, %error, "cannot free an identify slot");
        }
    }
}
