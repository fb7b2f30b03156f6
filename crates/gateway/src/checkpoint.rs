//! Sessions stored while the shards run, so that a gateway that dies (a
//! SIGKILL, an OOM kill, a lost node) leaves its successor something to
//! resume: Discord replays only to a RESUME, so without a stored session
//! every event it sent in the gap would be lost.
//!
//! Every [`EVERY`] (a new session at once), each shard's safe point (see [`crate::progress`]: never
//! past a publish JetStream has not acknowledged) is written to the session
//! bucket if it moved. A successor resumes from a point at most that old;
//! Discord replays from there, and what the dead process had already
//! published comes again under the same envelope ids, which JetStream's
//! duplicate window drops. A clean stop still stores the final point itself
//! (see `supervise`) after this task has ended, so a late checkpoint can never
//! overwrite it with an older one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::leases::LeaseClock;
use crate::progress::SafePoint;
use crate::sessions::{SessionStore, StoredSession};
use crate::Running;

/// How often a shard's moving point is stored while running: what a crash
/// can cost is replaying this much (deduplicated), never losing it.
pub const EVERY: Duration = Duration::from_secs(1);

/// How often shards are looked at. A new session (a first READY, a
/// re-identify) is stored at the next look rather than up to [`EVERY`]
/// later: until it is, a crash would leave nothing to resume.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Stores each running shard's safe point until `stop`: a new session at
/// once, a moving sequence every [`EVERY`]; only while the shard's lease is
/// safely held, so that a process that lost a shard never writes over the
/// session its new holder stores.
pub(crate) async fn run(
    running: Running,
    leases: Arc<LeaseClock>,
    sessions: SessionStore,
    total_shards: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut stored: HashMap<u32, (SafePoint, Instant)> = HashMap::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let mut failed = None;
        let shards = running.snapshot();
        // A shard that left (and may come back with another session) starts over.
        stored.retain(|id, _| shards.iter().any(|(s, _)| s == id));
        for (shard_id, shard) in shards {
            let Some(point) = shard.safe_point() else {
                continue;
            };
            let due = match stored.get(&shard_id) {
                None => true,
                Some((last, _)) if *last == point => false,
                Some((last, at)) => {
                    last.session_id != point.session_id
                        || last.resume_url != point.resume_url
                        || at.elapsed() >= EVERY
                }
            };
            if !due {
                continue;
            }
            if !leases.safely_held(shard_id) {
                continue;
            }
            let session = StoredSession {
                session_id: point.session_id.clone(),
                sequence: point.sequence,
                resume_url: point.resume_url.clone(),
                saved_at: crate::now_ms(),
            };
            match sessions.save(shard_id, total_shards, &session).await {
                Ok(()) => {
                    stored.insert(shard_id, (point, Instant::now()));
                }
                Err(error) => {
                    metrics::counter!(crate::metrics::SESSION_CHECKPOINT_FAILURES).increment(1);
                    failed = Some((shard_id, error));
                }
            }
        }
        // One line when checkpoints start failing and one when they
        // recover, not one per shard per second.
        match (failed, failing) {
            (Some((shard, error)), false) => {
                failing = true;
                tracing::warn!(shard, %error, "cannot checkpoint sessions; a crash now would make the next process identify afresh");
            }
            (None, true) => {
                failing = false;
                tracing::info!("sessions are checkpointed again");
            }
            _ => {}
        }
    }
}
