//! Forgetting processed-event ids once no copy of their event can arrive.
//!
//! Every handled event leaves its envelope id in `processed_events`, which is
//! what makes a redelivery or a re-publish harmless. An id is only needed
//! while a copy of its event can still reach a worker, and no message
//! outlives the streams' `max_age`; after that the row is dead weight that
//! would otherwise grow with every event the deployment ever saw. The same
//! pass forgets interaction replies that were stored but could not be sent
//! within Discord's window.

use std::time::Duration;

use bus::Topology;
use store::Store;
use tokio_util::sync::CancellationToken;

use crate::WorkerError;

/// How long a processed id must be kept: as long as the streams whose
/// envelopes are claimed keep a message. `None` when a stream keeps them
/// forever (a `max_age` of zero): then no id may ever be forgotten.
pub(crate) fn dedupe_horizon(topology: &Topology) -> Option<Duration> {
    let ages = [topology.events.max_age, topology.commands.max_age];
    if ages.iter().any(Duration::is_zero) {
        return None;
    }
    ages.into_iter().max()
}

/// Every `every`, deletes processed ids older than `keep` in each active
/// community. Errors are logged and retried at the next tick: housekeeping
/// never stops a worker.
pub(crate) async fn prune_processed_events(
    store: Store,
    keep: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // The first pass one interval after start, not at start: every worker
    // restart would otherwise walk every community at once.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match prune_once(&store, keep).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                pruned,
                "forgot processed event ids past the streams' max age"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "pruning processed event ids failed; retrying next tick");
            }
        }
    }
}

/// Far past Discord's 3-second response window (a reply is normally
/// forgotten within milliseconds of being stored).
const REPLIES_KEPT: Duration = Duration::from_secs(60);

/// How long role sync's counters (Discord 429s, undecided outcomes) are kept.
const COUNTERS_KEPT: Duration = Duration::from_secs(24 * 3600);

async fn prune_once(store: &Store, keep: Duration) -> Result<u64, store::StoreError> {
    let mut pruned = 0;
    for (tenant, _) in store.directory().active_communities().await? {
        let tx = store.begin(tenant).await?;
        pruned += tx.processed_events().prune(keep).await?;
        // Replies whose sending failed and never came back in Discord's
        // window: they can no longer be sent, and may hold one-time links.
        tx.interaction_replies().prune(REPLIES_KEPT).await?;
        // The sync status reads the last hour; a day leaves room to look back.
        tx.sync_counters().prune(COUNTERS_KEPT).await?;
        tx.commit().await?;
    }
    Ok(pruned)
}

/// Audit rows deleted per statement: small enough that no statement holds
/// its locks for long, large enough that a year of backlog goes in minutes.
const AUDIT_BATCH: i32 = 10_000;

/// Every `every`, deletes audit rows older than `retention` (the operator's
/// `AUDIT_RETENTION`), a batch at a time until none is left. Errors are
/// logged and retried at the next tick.
pub(crate) async fn prune_audit(
    store: Store,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut pruned = 0;
        loop {
            match store.directory().prune_audit(cutoff, AUDIT_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < AUDIT_BATCH as u64 || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the audit log failed; retrying next tick");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, ?retention, "pruned audit rows past the retention");
        }
    }
}

#[cfg(test)]
mod tests {
    use bus::{Namespace, Topology};

    use super::*;

    #[test]
    fn ids_are_kept_as_long_as_the_longest_stream_keeps_events_and_forever_without_a_limit() {
        let mut t = Topology::new(Namespace::root());
        t.events.max_age = Duration::from_secs(60);
        t.commands.max_age = Duration::from_secs(90);
        assert_eq!(dedupe_horizon(&t), Some(Duration::from_secs(90)));
        t.commands.max_age = Duration::ZERO;
        assert_eq!(dedupe_horizon(&t), None);
    }
}
