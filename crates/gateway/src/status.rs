//! What `/readyz` and the shard-state gauge report: each shard's connection
//! state while this process holds its lease, and whether NATS is connected.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use serde::Serialize;
use twilight_gateway::ShardState;

/// A shard's state as published in metrics and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardPhase {
    Disconnected = 0,
    Identifying = 1,
    Resuming = 2,
    Active = 3,
    FatallyClosed = 4,
    /// Not run here: another process holds its lease, or it waits for one.
    Standby = 5,
}

impl ShardPhase {
    pub fn of(state: ShardState) -> Self {
        match state {
            ShardState::Active => Self::Active,
            ShardState::Resuming => Self::Resuming,
            ShardState::Identifying => Self::Identifying,
            ShardState::FatallyClosed => Self::FatallyClosed,
            ShardState::Disconnected { .. } => Self::Disconnected,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Identifying,
            2 => Self::Resuming,
            3 => Self::Active,
            4 => Self::FatallyClosed,
            5 => Self::Standby,
            _ => Self::Disconnected,
        }
    }

    /// Connected with a session: events flow (a resume replays first).
    pub fn is_connected(self) -> bool {
        matches!(self, Self::Active | Self::Resuming)
    }
}

/// Shared, lock-free status of one gateway process.
#[derive(Debug)]
pub struct Status {
    first_shard: u32,
    shards: Vec<AtomicU8>,
    /// Which of `shards` this process holds the lease of.
    held: Vec<AtomicBool>,
    nats_connected: AtomicBool,
    stopping: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub nats_connected: bool,
    pub stopping: bool,
    /// The shards this process holds, each with its state.
    pub shards: BTreeMap<u32, ShardPhase>,
    /// Shards this process could run but another holds (or none yet).
    pub standby: usize,
}

impl Status {
    /// The shards this process could run (held or not).
    pub fn new(shard_ids: impl Iterator<Item = u32> + Clone) -> Self {
        let first_shard = shard_ids.clone().min().unwrap_or(0);
        let count = shard_ids.count();
        Self {
            first_shard,
            shards: (0..count)
                .map(|_| AtomicU8::new(ShardPhase::Standby as u8))
                .collect(),
            held: (0..count).map(|_| AtomicBool::new(false)).collect(),
            nats_connected: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// The shard's lease was taken (it starts disconnected) or given up.
    /// A held shard has a state series from the start: one that never
    /// connects must show as disconnected, not be missing (an alert on the
    /// state could not see it).
    pub fn set_held(&self, shard_id: u32, held: bool) {
        let Some(slot) = self
            .held
            .get(shard_id.wrapping_sub(self.first_shard) as usize)
        else {
            return;
        };
        slot.store(held, Ordering::Relaxed);
        self.set_shard(
            shard_id,
            if held {
                ShardPhase::Disconnected
            } else {
                ShardPhase::Standby
            },
        );
        metrics::gauge!(crate::metrics::SHARDS_HELD).set(self.held_count() as f64);
    }

    pub fn holds(&self, shard_id: u32) -> bool {
        self.held
            .get(shard_id.wrapping_sub(self.first_shard) as usize)
            .is_some_and(|h| h.load(Ordering::Relaxed))
    }

    fn held_count(&self) -> usize {
        self.held
            .iter()
            .filter(|h| h.load(Ordering::Relaxed))
            .count()
    }

    pub fn set_shard(&self, shard_id: u32, phase: ShardPhase) {
        let Some(slot) = self
            .shards
            .get(shard_id.wrapping_sub(self.first_shard) as usize)
        else {
            return;
        };
        let previous = slot.swap(phase as u8, Ordering::Relaxed);
        if previous != phase as u8 || phase == ShardPhase::Disconnected {
            metrics::gauge!(crate::metrics::SHARD_STATE, "shard" => shard_id.to_string())
                .set(f64::from(phase as u8));
        }
    }

    pub fn shard(&self, shard_id: u32) -> ShardPhase {
        self.shards
            .get(shard_id.wrapping_sub(self.first_shard) as usize)
            .map_or(ShardPhase::Disconnected, |s| {
                ShardPhase::from_u8(s.load(Ordering::Relaxed))
            })
    }

    pub fn set_nats_connected(&self, connected: bool) {
        self.nats_connected.store(connected, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn readiness(&self) -> Readiness {
        let shards: BTreeMap<u32, ShardPhase> = (0..self.shards.len() as u32)
            .map(|i| self.first_shard + i)
            .filter(|id| self.holds(*id))
            .map(|id| (id, self.shard(id)))
            .collect();
        let standby = self.shards.len() - shards.len();
        let nats_connected = self.nats_connected.load(Ordering::Relaxed);
        let stopping = self.stopping.load(Ordering::Relaxed);
        let ready = !stopping && nats_connected && shards.values().all(|p| p.is_connected());
        Readiness {
            ready,
            nats_connected,
            stopping,
            shards,
            standby,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_shard_and_nats() {
        let status = Status::new(4..=6);
        status.set_held(4, true);
        status.set_held(5, true);
        assert!(!status.readiness().ready);
        status.set_shard(4, ShardPhase::Active);
        status.set_shard(5, ShardPhase::Resuming);
        assert!(!status.readiness().ready, "NATS not connected yet");
        status.set_nats_connected(true);
        assert!(status.readiness().ready);
        status.set_shard(5, ShardPhase::Disconnected);
        assert!(!status.readiness().ready);
        status.set_shard(5, ShardPhase::Active);
        status.set_stopping();
        assert!(!status.readiness().ready);
        status.set_shard(99, ShardPhase::Active); // not a candidate: ignored
        let readiness = status.readiness();
        assert_eq!(readiness.shards.len(), 2);
        assert_eq!(readiness.standby, 1, "shard 6 is held elsewhere");
    }

    #[test]
    fn a_shard_given_up_leaves_readiness_and_shows_standby() {
        let status = Status::new(0..=1);
        status.set_nats_connected(true);
        assert!(
            status.readiness().ready,
            "a process holding nothing is a ready standby"
        );
        status.set_held(0, true);
        assert!(!status.readiness().ready, "a held shard must connect first");
        status.set_shard(0, ShardPhase::Active);
        assert!(status.readiness().ready);
        status.set_held(0, false);
        assert_eq!(status.shard(0), ShardPhase::Standby);
        let readiness = status.readiness();
        assert!(readiness.ready && readiness.shards.is_empty());
        assert_eq!(readiness.standby, 2);
    }
}
