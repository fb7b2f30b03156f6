//! Where the role-change budgets live: in NATS key-value, shared by every
//! worker process, or in this process alone.
//!
//! Discord's limits are per bot, not per process: the global rate, each
//! guild's role-change window and the invalid-request count that ends in a
//! ban. So the records that pace them ([`GlobalRecord`], [`GuildWindow`])
//! live in one key-value bucket (`DISCORD_BUDGET` in the worker's
//! namespace) and every change goes through compare-and-set on them (a
//! write that names the revision it read; NATS refuses it if another
//! process wrote in between, and the change is worked out again from what
//! that process wrote).
//!
//! Why NATS KV rather than Redis: every worker already needs NATS (its
//! work comes from JetStream) and reaches it with its own credentials, and
//! NATS 2.9's key-value bucket has the compare-and-set this needs. Redis
//! would be a second service to deploy, secure, monitor and reach from
//! every worker, only for this; a worker that cannot reach NATS has no
//! role changes to make anyway.
//!
//! Guild windows are shared too, not only the global rate: JetStream hands
//! one guild's bulk re-check to every worker, and each process spending
//! its own idea of the guild's bucket would draw a 429 per process and
//! window, each an invalid request. A change therefore costs one round
//! trip to its guild's record (the revision last seen is tried first, so
//! an uncontended write is one request) and, every few changes, one to the
//! global record for a lease of tokens ([`GlobalRate::lease_max`]). Both
//! are small next to the Discord request they pace.
//!
//! When the bucket does not answer (NATS down or partitioned, a timeout),
//! this process does not stop syncing roles and does not exceed the limit:
//! it logs once and paces itself from a conservative share, half the global
//! rate divided by the processes it last saw drawing (or by
//! [`ASSUMED_PEERS`] if it never saw the record), with guild windows and
//! invalid-request counts kept locally (from the last shared values) and
//! its share of the invalid-request limit. It tries the bucket again every
//! [`RETRY_SHARED`], and then adds the invalid requests it counted
//! meanwhile to the shared count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use wire::GuildId;

use super::global_bucket::{GlobalRate, GlobalRecord, Lease, LEASE_TTL};
use super::guild_window::{GuildWindow, Observed, Take};
use super::RoleChangeLimits;

/// A key-value request that takes longer than this counts as unreachable.
const KV_TIMEOUT: Duration = Duration::from_millis(1_000);

/// After falling back, how long before the bucket is tried again.
const RETRY_SHARED: Duration = Duration::from_secs(5);

/// Writes that lose to another process's before one is given up (the
/// caller retries shortly).
const MAX_CAS: usize = 16;

/// When a write was given up on: how soon to try again.
const CONTENDED_RETRY: Duration = Duration::from_millis(10);

/// Peers assumed when the shared record was never read.
const ASSUMED_PEERS: usize = 4;

/// Above this many remembered revisions, the memory is cleared.
const CACHE_LIMIT: usize = 10_000;

const GLOBAL_KEY: &str = "global";

fn guild_key(guild: GuildId) -> String {
    format!("guild.{guild}")
}

/// How this process shares Discord's budget.
// Made once per process: the size of the NATS handles does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Sharing {
    /// Through the Discord budget bucket of `topology`'s namespace on
    /// `jetstream`'s server, with every worker using the same namespace.
    Nats {
        jetstream: jetstream::Context,
        topology: bus::Topology,
    },
    /// Not at all: this process is the only one sending (a one-off command,
    /// a test).
    Alone,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sharing::Nats { topology, .. } => write!(
                f,
                "Nats {{ bucket: {:?} }}",
                topology.discord_budget_bucket()
            ),
            Sharing::Alone => write!(f, "Alone"),
        }
    }
}

/// What a lease of global tokens got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GlobalLease {
    /// `count` tokens, each to be spent before `expires`.
    Granted {
        count: u32,
        expires: Instant,
    },
    WaitUntil(Instant),
    /// The invalid-request breaker is open: nothing is to be sent.
    BreakerOpen,
}

/// The record's parameters where it is being changed.
#[derive(Clone, Copy, Debug)]
struct Scope {
    shared: bool,
    rate: GlobalRate,
    invalid_limit: u64,
}

#[derive(Default)]
struct State {
    /// While the bucket is unreachable: when to try it again.
    fallback: Option<Instant>,
    /// Records kept here (alone, or while falling back).
    local: HashMap<String, Vec<u8>>,
    /// The last revision and value written or read per shared key.
    seen: HashMap<String, (u64, Vec<u8>)>,
    /// Processes drawing from the shared record when last read.
    peers: Option<usize>,
    /// Invalid requests not yet added to the shared count.
    unflushed: u32,
    /// Until when (Unix ms) the breaker is open, as last computed.
    breaker_until: Option<u64>,
}

pub(crate) struct Budget {
    limits: RoleChangeLimits,
    rate: GlobalRate,
    /// This process among the peers.
    me: String,
    shared: Option<(jetstream::Context, bus::Topology, OnceCell<kv::Store>)>,
    state: Mutex<State>,
}

impl Budget {
    pub(crate) fn new(limits: RoleChangeLimits, sharing: Sharing) -> Budget {
        static CLIENTS: AtomicU64 = AtomicU64::new(0);
        let me = format!(
            "{}-{}-{}",
            std::process::id(),
            unix_ms(),
            CLIENTS.fetch_add(1, Ordering::Relaxed)
        );
        let shared = match sharing {
            Sharing::Nats {
                jetstream,
                topology,
            } => Some((jetstream, topology, OnceCell::new())),
            Sharing::Alone => None,
        };
        metrics::gauge!("worker_discord_budget_shared").set(if shared.is_some() {
            1.0
        } else {
            0.0
        });
        Budget {
            rate: GlobalRate::for_limit(f64::from(limits.global_rate), limits.global_margin),
            limits,
            me,
            shared,
            state: Mutex::new(State::default()),
        }
    }

    /// Leases up to `want` global tokens.
    pub(crate) async fn lease(&self, want: u32) -> GlobalLease {
        // The tokens' time to live runs from the record's clock reading,
        // not from the answer: a slow round trip must shorten their life,
        // not move tokens granted now into a later second.
        let asked = Instant::now();
        let now = unix_ms();
        let me = self.me.clone();
        let outcome = self
            .modify_global(0, |record, scope| {
                if self.breaker_in(record, scope, now).is_some() {
                    return (false, None);
                }
                let lease = record.lease(&scope.rate, want, now, &me);
                (matches!(lease, Lease::Granted(_)), Some(lease))
            })
            .await;
        match outcome {
            Some(Some(Lease::Granted(count))) => GlobalLease::Granted {
                count,
                expires: asked + LEASE_TTL,
            },
            Some(Some(Lease::WaitUntil(at))) => GlobalLease::WaitUntil(instant_at(at, now)),
            Some(None) => GlobalLease::BreakerOpen,
            None => GlobalLease::WaitUntil(Instant::now() + CONTENDED_RETRY),
        }
    }

    /// Reads the shared record again (to see the breaker close).
    pub(crate) async fn refresh(&self) {
        self.modify_global(0, |_, _| (false, ())).await;
    }

    /// Takes one change from `guild`'s window, or says until when to wait.
    pub(crate) async fn take_guild(&self, guild: GuildId) -> Result<(), Instant> {
        let now = unix_ms();
        let taken = self
            .modify(&guild_key(guild), |window: Option<GuildWindow>, _| {
                let mut window = window.unwrap_or_default();
                let take = window.take(now);
                (matches!(take, Take::Go).then_some(window), take)
            })
            .await;
        match taken {
            Some(Take::Go) => Ok(()),
            Some(Take::WaitUntil(at)) => Err(instant_at(at, now)),
            None => Err(Instant::now() + CONTENDED_RETRY),
        }
    }

    /// Records what a response said about `guild`'s window; `None`: the
    /// response had no rate-limit headers, or there was no response.
    pub(crate) async fn observe_guild(&self, guild: GuildId, seen: Option<Observed>) {
        let now = unix_ms();
        self.modify(&guild_key(guild), |window: Option<GuildWindow>, _| {
            let mut window = window.unwrap_or_default();
            let changed = match seen {
                Some(seen) => window.observe(seen, now),
                None => window.unanswered(now),
            };
            (changed.then_some(window), ())
        })
        .await;
    }

    /// Discord answered a global 429: every process waits `retry_after`.
    pub(crate) async fn pause_global(&self, retry_after: Duration) {
        let now = unix_ms();
        self.modify_global(0, |record, _| {
            record.pause(retry_after, now);
            (true, ())
        })
        .await;
    }

    /// Counts `n` invalid requests (401, 403, a 429 not of a shared limit).
    pub(crate) async fn record_invalid(&self, n: u32) {
        if self.shared.is_some() {
            self.lock().unflushed += n;
        }
        self.modify_global(n, |_, _| (false, ())).await;
    }

    /// Until when the invalid-request breaker is open, as last seen.
    pub(crate) fn breaker_open_until(&self) -> Option<Instant> {
        let now = unix_ms();
        let until = self.lock().breaker_until?;
        (until > now).then(|| instant_at(until, now))
    }

    /// Whether the breaker was open when last seen, even if its time has
    /// passed since (a re-read decides).
    pub(crate) fn breaker_seen_open(&self) -> bool {
        self.lock().breaker_until.is_some()
    }

    fn breaker_in(&self, record: &GlobalRecord, scope: Scope, now: u64) -> Option<u64> {
        record
            .invalid
            .open_until(now, self.window_ms(), scope.invalid_limit)
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.limits.invalid_window.as_millis()).unwrap_or(u64::MAX / 4)
    }

    /// Changes the global record with `f` (which says whether to write),
    /// first adding invalid requests: `local_add` if the record is this
    /// process's own, else those not yet added to the shared count. Then
    /// notes what the record says about the breaker and the peers.
    async fn modify_global<T>(
        &self,
        local_add: u32,
        mut f: impl FnMut(&mut GlobalRecord, Scope) -> (bool, T),
    ) -> Option<T> {
        let now = unix_ms();
        let window = self.window_ms();
        let mut flushing = 0;
        let result = self
            .modify(GLOBAL_KEY, |record: Option<GlobalRecord>, scope| {
                let mut record = record.unwrap_or_else(|| GlobalRecord::new(&scope.rate, now));
                let add = if scope.shared {
                    flushing += std::mem::take(&mut self.lock().unflushed);
                    flushing
                } else {
                    local_add
                };
                record.invalid.add(add, now, window);
                let (write, out) = f(&mut record, scope);
                let breaker = record.invalid.open_until(now, window, scope.invalid_limit);
                let noted = (breaker, scope.shared.then(|| record.peers()));
                ((write || add > 0).then_some(record), (out, noted))
            })
            .await;
        let Some((out, (breaker, peers))) = result else {
            // Not written: those invalid requests are still to be added.
            self.lock().unflushed += flushing;
            return None;
        };
        let mut state = self.lock();
        match peers {
            Some(peers) => state.peers = Some(peers),
            // The shared write failed after taking them, and the change
            // was made locally: they are still to be added.
            None => state.unflushed += flushing,
        }
        let was_open = state.breaker_until.is_some();
        state.breaker_until = breaker;
        drop(state);
        match (was_open, breaker) {
            (false, Some(until)) => {
                tracing::error!(
                    limit = self.limits.invalid_limit,
                    window = ?self.limits.invalid_window,
                    open_for = ?Duration::from_millis(until.saturating_sub(now)),
                    "Discord invalid-request breaker open: too many 401, 403 and 429 responses; no role change is sent until enough of them are older than the window (Discord bans a bot at 10,000 in 10 minutes)"
                );
                metrics::gauge!("worker_discord_breaker_open").set(1.0);
            }
            (true, None) => {
                tracing::warn!("Discord invalid-request breaker closed: role changes resume");
                metrics::gauge!("worker_discord_breaker_open").set(0.0);
            }
            _ => {}
        }
        Some(out)
    }

    /// Reads `key`'s record, changes it with `f` (which returns the record
    /// to write, if any, and its answer) and writes it back, in the shared
    /// bucket if it answers, else locally. `None`: the write kept losing to
    /// other processes'.
    async fn modify<R, T>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<R>, Scope) -> (Option<R>, T),
    ) -> Option<T>
    where
        R: Serialize + DeserializeOwned,
    {
        if let Some(store) = self.shared_store().await {
            match self.modify_shared(&store, key, &mut f).await {
                Ok(answer) => return answer,
                Err(problem) => self.fall_back(&problem),
            }
        }
        Some(self.modify_local(key, f))
    }

    async fn modify_shared<R, T>(
        &self,
        store: &kv::Store,
        key: &str,
        f: &mut impl FnMut(Option<R>, Scope) -> (Option<R>, T),
    ) -> Result<Option<T>, String>
    where
        R: Serialize + DeserializeOwned,
    {
        let scope = self.scope(true);
        // The revision this process last saw: right unless another wrote.
        let mut current = self.lock().seen.get(key).cloned();
        for _ in 0..MAX_CAS {
            let (revision, record) = match &current {
                Some((revision, bytes)) => (*revision, decode::<R>(key, bytes)),
                None => (0, None),
            };
            let (write, answer) = f(record, scope);
            let Some(write) = write else {
                return Ok(Some(answer));
            };
            let bytes = serde_json::to_vec(&write).map_err(|e| e.to_string())?;
            let updated = tokio::time::timeout(
                KV_TIMEOUT,
                store.update(key, bytes.clone().into(), revision),
            )
            .await
            .map_err(|_| format!("writing {key} timed out after {KV_TIMEOUT:?}"))?;
            match updated {
                Ok(revision) => {
                    let mut state = self.lock();
                    if state.seen.len() > CACHE_LIMIT {
                        state.seen.clear();
                    }
                    state.seen.insert(key.to_owned(), (revision, bytes));
                    return Ok(Some(answer));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    current = self.read(store, key).await?;
                }
                Err(e) => return Err(format!("writing {key}: {e}")),
            }
        }
        Ok(None)
    }

    /// The entry's revision and value; `None` if it has none.
    async fn read(&self, store: &kv::Store, key: &str) -> Result<Option<(u64, Vec<u8>)>, String> {
        let entry = tokio::time::timeout(KV_TIMEOUT, store.entry(key))
            .await
            .map_err(|_| format!("reading {key} timed out after {KV_TIMEOUT:?}"))?
            .map_err(|e| format!("reading {key}: {e}"))?;
        Ok(entry.map(|entry| {
            let value = match entry.operation {
                kv::Operation::Put => entry.value.to_vec(),
                kv::Operation::Delete | kv::Operation::Purge => Vec::new(),
            };
            let seen = (entry.revision, value);
            self.lock().seen.insert(key.to_owned(), seen.clone());
            seen
        }))
    }

    /// `f` runs under the state lock here: it must not take it.
    fn modify_local<R, T>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<R>, Scope) -> (Option<R>, T),
    ) -> T
    where
        R: Serialize + DeserializeOwned,
    {
        let scope = self.scope(false);
        let mut state = self.lock();
        let record = state
            .local
            .get(key)
            .and_then(|bytes| decode::<R>(key, bytes));
        let (write, answer) = f(record, scope);
        if let Some(write) = write {
            match serde_json::to_vec(&write) {
                Ok(bytes) => {
                    if state.local.len() > CACHE_LIMIT {
                        state.local.clear();
                    }
                    state.local.insert(key.to_owned(), bytes);
                }
                Err(e) => tracing::error!(key, error = %e, "cannot encode a budget record (a bug)"),
            }
        }
        answer
    }

    /// The shared bucket, unless this process is alone or falling back
    /// (and it is not yet time to try again).
    async fn shared_store(&self) -> Option<kv::Store> {
        let (jetstream, topology, store) = self.shared.as_ref()?;
        let retry_at = self.lock().fallback;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let opened = store
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    KV_TIMEOUT,
                    bus::open_discord_budget_bucket(jetstream, topology),
                )
                .await
                .map_err(|_| format!("opening the bucket timed out after {KV_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())
            })
            .await;
        match opened {
            Ok(store) => {
                if retry_at.is_some() {
                    self.back_to_shared();
                }
                Some(store.clone())
            }
            Err(problem) => {
                self.fall_back(&problem);
                None
            }
        }
    }

    /// The bucket failed: pace locally for [`RETRY_SHARED`].
    fn fall_back(&self, problem: &str) {
        let mut state = self.lock();
        let first = state.fallback.is_none();
        state.fallback = Some(Instant::now() + RETRY_SHARED);
        if !first {
            return;
        }
        // Start from what the bucket said last: guild windows, invalid
        // counts. The global bucket starts empty, at this process's share.
        let seen: Vec<(String, Vec<u8>)> = state
            .seen
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        for (key, value) in seen {
            state.local.entry(key).or_insert(value);
        }
        if let Some(mut global) = state
            .local
            .get(GLOBAL_KEY)
            .and_then(|bytes| decode::<GlobalRecord>(GLOBAL_KEY, bytes))
        {
            global.pause(Duration::ZERO, unix_ms());
            if let Ok(bytes) = serde_json::to_vec(&global) {
                state.local.insert(GLOBAL_KEY.to_owned(), bytes);
            }
        }
        drop(state);
        let scope = self.scope(false);
        tracing::warn!(
            error = problem,
            share_per_second = scope.rate.per_second(),
            invalid_limit = scope.invalid_limit,
            retry_in = ?RETRY_SHARED,
            "the Discord budget shared in NATS key-value does not answer: this worker paces role changes from a conservative share of its own until it does"
        );
        metrics::gauge!("worker_discord_budget_shared").set(0.0);
    }

    fn back_to_shared(&self) {
        let mut state = self.lock();
        if state.fallback.take().is_none() {
            return;
        }
        state.local.clear();
        drop(state);
        tracing::info!("the Discord budget in NATS key-value answers again: role changes are paced with the other workers");
        metrics::gauge!("worker_discord_budget_shared").set(1.0);
    }

    fn scope(&self, shared: bool) -> Scope {
        if shared || self.shared.is_none() {
            return Scope {
                shared,
                rate: self.rate,
                invalid_limit: u64::from(self.limits.invalid_limit),
            };
        }
        let peers = self.lock().peers.unwrap_or(ASSUMED_PEERS).max(1);
        let share = f64::from(self.limits.global_rate) / (2.0 * peers as f64);
        Scope {
            shared: false,
            rate: GlobalRate::for_limit(share, self.limits.global_margin),
            invalid_limit: (u64::from(self.limits.invalid_limit) / peers as u64).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain values; a panic elsewhere cannot leave them half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A record that does not decode (another version wrote it, or it was
/// deleted) counts as absent and is written afresh: at worst one burst of
/// the global bucket or one probe of a guild, never a worker stuck on it.
fn decode<R: DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<R> {
    if bytes.is_empty() {
        return None;
    }
    match serde_json::from_slice(bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable Discord budget record; starting it afresh");
            None
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The moment of Unix millisecond `at`, on tokio's clock.
fn instant_at(at: u64, now_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at.saturating_sub(now_ms))
}
