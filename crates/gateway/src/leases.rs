//! Shard ownership leased in NATS KV, so that no shard runs in two gateway
//! processes: two sessions of one shard would publish every event twice
//! under different envelope ids (ids derive from the session), and
//! JetStream's dedupe could not catch it.
//!
//! A lease is one key per shard (`lease.{total}.{shard}`) in the gateway's
//! bucket, naming its holder. Every write is a compare-and-set on the key's
//! revision, so of two processes racing for a shard exactly one wins.
//!
//! Expiry is judged by *watching the revision*, not by comparing clocks: the
//! holder rewrites its lease every `ttl / 4`; another process that sees the
//! same revision for a whole `ttl` (the holder's, stored in the lease) on its
//! own monotonic clock knows the holder stopped renewing, and takes the shard
//! over with a compare-and-set on that revision. The holder, in turn, stops a
//! shard whose lease it could not renew for `ttl / 2` (NATS unreachable) or
//! found taken: by the time anyone may take over (a full `ttl` after the last
//! renewal was stored) the old holder has stopped reading the shard. NATS 2.9
//! (Debian's) has no per-key TTL, which is why expiry is observed rather than
//! stored.
//!
//! A clean stop stores each shard's session first and then deletes its
//! leases, so that a waiting process takes the shards at its next look and
//! resumes them: Discord replays what was not yet durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::ShardRange;

/// Which shards a process asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Exactly these (from `SHARDS`, or `POOL_ID` × `SHARDS_PER_POOL`), as
    /// far as no other live process holds them.
    Range(ShardRange),
    /// Up to this many of all the shards (`SHARD_COUNT`), whichever are free.
    Count(u32),
}

impl Wanted {
    /// The shards this process could ever run, and how many at once.
    pub fn candidates(self, total: u32) -> (Vec<u32>, usize) {
        match self {
            Wanted::Range(range) => {
                let ids: Vec<u32> = range.ids().filter(|id| *id < total).collect();
                let n = ids.len();
                (ids, n)
            }
            Wanted::Count(n) => ((0..total).collect(), n.min(total) as usize),
        }
    }
}

/// What a lease key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holding process (host, pid, start time): unique per process, so
    /// a restarted process does not mistake its predecessor's lease for its
    /// own.
    pub holder: String,
    /// How long others wait, after its last renewal, before taking over.
    pub ttl_ms: u64,
}

pub fn key(shard_id: u32, total: u32) -> String {
    format!("lease.{total}.{shard_id}")
}

/// When each held lease was last renewed, shared with the session
/// checkpoints: a checkpoint is written only while its shard's lease is
/// safely held, so a process that lost a shard (paused, cut off) never writes
/// over the session its new holder stores.
#[derive(Debug, Default)]
pub struct LeaseClock {
    renewed: Mutex<HashMap<u32, Instant>>,
    ttl: Duration,
}

impl LeaseClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Instant>> {
        self.renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renewed within half the TTL: nobody else can have taken it.
    pub fn safely_held(&self, shard_id: u32) -> bool {
        self.lock()
            .get(&shard_id)
            .is_some_and(|at| at.elapsed() < self.ttl / 2)
    }

    fn set(&self, shard_id: u32, renewed: Option<Instant>) {
        let mut map = self.lock();
        match renewed {
            Some(at) => map.insert(shard_id, at),
            None => map.remove(&shard_id),
        };
    }
}

/// A lease this process holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    revision: u64,
    renewed: Instant,
}

/// Another process's lease, as last seen here.
#[derive(Clone, Copy, Debug)]
struct Seen {
    revision: u64,
    since: Instant,
    ttl: Duration,
}

/// What a look at the leases changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Newly held: start these shards (resuming their stored sessions).
    pub acquired: Vec<u32>,
    /// No longer held (taken by another process, or not renewable for
    /// `ttl / 2`): stop these shards at once, without storing anything.
    pub lost: Vec<u32>,
}

/// This process's leases.
pub struct Leases {
    store: Store,
    bucket: String,
    holder: String,
    ttl: Duration,
    total: u32,
    candidates: Vec<u32>,
    capacity: usize,
    held: HashMap<u32, Held>,
    seen: HashMap<u32, Seen>,
    clock: Arc<LeaseClock>,
    /// Lease writes are failing (reported once, not every look).
    failing: bool,
    /// When held leases were last written (successfully or not).
    renewed_at: Option<Instant>,
}

impl Leases {
    pub fn new(
        store: Store,
        bucket: String,
        holder: String,
        ttl: Duration,
        total: u32,
        wanted: Wanted,
    ) -> Self {
        let (candidates, capacity) = wanted.candidates(total);
        Self {
            store,
            bucket,
            holder,
            ttl,
            total,
            candidates,
            capacity,
            held: HashMap::new(),
            seen: HashMap::new(),
            clock: Arc::new(LeaseClock {
                renewed: Mutex::default(),
                ttl,
            }),
            failing: false,
            renewed_at: None,
        }
    }

    /// How often [`Leases::tick`] should run.
    pub fn look_every(&self) -> Duration {
        self.ttl / 8
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }

    pub fn holds(&self, shard_id: u32) -> bool {
        self.held.contains_key(&shard_id)
    }

    pub fn clock(&self) -> Arc<LeaseClock> {
        Arc::clone(&self.clock)
    }

    fn hold(&mut self, shard_id: u32, revision: u64) {
        let renewed = Instant::now();
        self.held.insert(shard_id, Held { revision, renewed });
        self.clock.set(shard_id, Some(renewed));
    }

    fn lose(&mut self, shard_id: u32, changes: &mut Changes) {
        self.held.remove(&shard_id);
        self.clock.set(shard_id, None);
        metrics::counter!(crate::metrics::SHARD_LEASES_LOST).increment(1);
        changes.lost.push(shard_id);
    }

    fn value(&self) -> bytes::Bytes {
        let value = LeaseValue {
            holder: self.holder.clone(),
            ttl_ms: self.ttl.as_millis() as u64,
        };
        serde_json::to_vec(&value).unwrap_or_default().into()
    }

    /// Renews every held lease and, when `acquire`, takes free or expired
    /// shards up to the capacity.
    ///
    /// Looks run every TTL/8 and renew every TTL/4, each read or write
    /// bounded by TTL/8, so that a holder cut off from NATS stops a shard
    /// at most 3/4 of a TTL after its last renewal, before another process
    /// (waiting a whole TTL after it) may take the shard over.
    pub async fn tick(&mut self, acquire: bool) -> Changes {
        let mut changes = Changes::default();
        self.fence(&mut changes, None);
        if self
            .renewed_at
            .is_none_or(|at| at.elapsed() >= self.ttl / 4)
        {
            self.renewed_at = Some(Instant::now());
            self.renew(&mut changes).await;
        }
        if acquire {
            self.acquire(&mut changes).await;
        }
        changes
    }

    /// How long one read or write of the bucket may take. Bounded well
    /// under the TTL: a process cut off from NATS must notice in time to
    /// stop its shards before another may take them (async-nats would
    /// otherwise wait out its own request timeout, or the reconnect).
    fn op_timeout(&self) -> Duration {
        self.ttl / 8
    }

    async fn renew(&mut self, changes: &mut Changes) {
        let value = self.value();
        let limit = self.op_timeout();
        // Concurrently: one slow write must not hold the others past the TTL.
        let writes = self.held.iter().map(|(&shard_id, held)| {
            let key = key(shard_id, self.total);
            let (store, value, revision) = (&self.store, value.clone(), held.revision);
            async move {
                let written =
                    tokio::time::timeout(limit, store.update(&key, value, revision)).await;
                (shard_id, written)
            }
        });
        let results = futures::future::join_all(writes).await;
        let mut error = None;
        for (shard_id, written) in results {
            match written {
                Ok(Ok(revision)) => self.hold(shard_id, revision),
                Ok(Err(e)) if is_wrong_revision(&e) => {
                    tracing::warn!(
                        shard = shard_id,
                        "the shard's lease was taken by another process; stopping the shard"
                    );
                    self.lose(shard_id, changes);
                }
                Ok(Err(e)) => error = Some(e.to_string()),
                Err(_) => error = Some(format!("no answer within {limit:?}")),
            }
        }
        self.fence(changes, error.as_deref());
        self.report(error);
    }

    /// Stops every shard not renewed for half the TTL: others wait a whole
    /// TTL after the last renewal they saw before they take over.
    fn fence(&mut self, changes: &mut Changes, error: Option<&str>) {
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, held)| held.renewed.elapsed() >= self.ttl / 2)
            .map(|(&shard_id, _)| shard_id)
            .collect();
        for shard_id in stale {
            tracing::warn!(
                shard = shard_id,
                error = error.unwrap_or("no answer yet"),
                "cannot renew the shard's lease for half its TTL; stopping the shard before another process may take it"
            );
            self.lose(shard_id, changes);
        }
    }

    async fn acquire(&mut self, changes: &mut Changes) {
        if self.held.len() >= self.capacity {
            return;
        }
        let value = self.value();
        let mut error = None;
        for shard_id in self.candidates.clone() {
            if self.held.len() >= self.capacity {
                break;
            }
            if self.held.contains_key(&shard_id) {
                continue;
            }
            let key = key(shard_id, self.total);
            let entry = match tokio::time::timeout(self.op_timeout(), self.store.entry(&key)).await
            {
                Ok(Ok(entry)) => entry,
                Ok(Err(e)) => {
                    error = Some(format!("cannot read {key}: {e}"));
                    break;
                }
                Err(_) => {
                    error = Some(format!(
                        "cannot read {key}: no answer within {:?}",
                        self.op_timeout()
                    ));
                    break;
                }
            };
            let mut taking_over = false;
            // The revision to compare-and-set on; None: the key never existed.
            let expected = match &entry {
                None => None,
                Some(e) if e.operation != Operation::Put => Some(e.revision),
                Some(e) => {
                    let lease = serde_json::from_slice::<LeaseValue>(&e.value).ok();
                    let ttl = lease
                        .as_ref()
                        .map_or(self.ttl, |l| Duration::from_millis(l.ttl_ms));
                    if lease.as_ref().is_some_and(|l| l.holder == self.holder) {
                        // Ours, from before a renewal failed: adopt it again.
                        Some(e.revision)
                    } else {
                        let seen = self.seen.entry(shard_id).or_insert(Seen {
                            revision: e.revision,
                            since: Instant::now(),
                            ttl,
                        });
                        if seen.revision != e.revision {
                            *seen = Seen {
                                revision: e.revision,
                                since: Instant::now(),
                                ttl,
                            };
                        }
                        if seen.since.elapsed() < seen.ttl {
                            continue;
                        }
                        tracing::info!(
                            shard = shard_id,
                            holder = lease.as_ref().map_or("?", |l| l.holder.as_str()),
                            "the shard's lease expired; taking the shard over"
                        );
                        taking_over = true;
                        Some(e.revision)
                    }
                }
            };
            // Revision 0 means "only if the key does not exist".
            let Ok(written) = tokio::time::timeout(
                self.op_timeout(),
                self.store
                    .update(&key, value.clone(), expected.unwrap_or(0)),
            )
            .await
            else {
                error = Some(format!(
                    "cannot write {key}: no answer within {:?}",
                    self.op_timeout()
                ));
                break;
            };
            match written {
                Ok(revision) => {
                    self.seen.remove(&shard_id);
                    self.hold(shard_id, revision);
                    if taking_over {
                        metrics::counter!(crate::metrics::SHARD_TAKEOVERS).increment(1);
                    }
                    changes.acquired.push(shard_id);
                }
                // Another process was quicker: its lease is seen next time.
                Err(e) if is_wrong_revision(&e) => {}
                Err(e) => {
                    error = Some(format!("cannot write {key}: {e}"));
                    break;
                }
            }
        }
        self.report(error);
    }

    /// Deletes every held lease (after the sessions were stored), so that
    /// another process takes the shards at once instead of after the TTL.
    /// Returns how many were handed over.
    pub async fn release_all(&mut self) -> usize {
        let mut released = 0;
        for (shard_id, held) in std::mem::take(&mut self.held) {
            self.clock.set(shard_id, None);
            let key = key(shard_id, self.total);
            match self
                .store
                .delete_expect_revision(&key, Some(held.revision))
                .await
            {
                Ok(()) => released += 1,
                Err(error) => tracing::warn!(
                    shard = shard_id,
                    %error,
                    "cannot release the shard's lease; another process takes it after the TTL"
                ),
            }
        }
        released
    }

    /// One line when lease writes start failing and one when they recover.
    fn report(&mut self, error: Option<String>) {
        match (error, self.failing) {
            (Some(problem), false) => {
                self.failing = true;
                tracing::warn!(bucket = %self.bucket, %problem, "shard leases cannot be read or written; held shards keep running for half the lease TTL");
            }
            (None, true) => {
                self.failing = false;
                tracing::info!(bucket = %self.bucket, "shard leases are written again");
            }
            _ => {}
        }
    }
}

/// A compare-and-set that lost to another writer.
fn is_wrong_revision(e: &async_nats::jetstream::kv::UpdateError) -> bool {
    e.kind() == UpdateErrorKind::WrongLastRevision
}

/// A name for this process that no other process shares, even its own
/// restart on the same host.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}/{}", std::process::id(), crate::now_ms())
}
