//! What `/readyz` and the shard-state gauge report: each owned shard's
//! connection state and whether NATS is connected.

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
    nats_connected: AtomicBool,
    stopping: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub nats_connected: bool,
    pub stopping: bool,
    pub shards: BTreeMap<u32, ShardPhase>,
}

impl Status {
    pub fn new(shard_ids: impl Iterator<Item = u32> + Clone) -> Self {
        let first_shard = shard_ids.clone().min().unwrap_or(0);
        // Every owned shard has a series from the start: one that never
        // connects must show as disconnected, not be missing (an alert on
        // the state could not see it).
        for shard_id in shard_ids.clone() {
            metrics::gauge!(crate::metrics::SHARD_STATE, "shard" => shard_id.to_string())
                .set(f64::from(ShardPhase::Disconnected as u8));
        }
        let count = shard_ids.count();
        Self {
            first_shard,
            shards: (0..count)
                .map(|_| AtomicU8::new(ShardPhase::Disconnected as u8))
                .collect(),
            nats_connected: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn set_shard(&self, shard_id: u32, phase: ShardPhase) {
        let Some(slot) = self
            .shards
            .get(shard_id.wrapping_sub(self.first_shard) as usize)
        else {
            return;
        };
        let previous = slot.swap(phase as u8, Ordering::Relaxed);
        if previous != phase as u8 {
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
            .map(|i| (self.first_shard + i, self.shard(self.first_shard + i)))
            .collect();
        let nats_connected = self.nats_connected.load(Ordering::Relaxed);
        let stopping = self.stopping.load(Ordering::Relaxed);
        let ready = !stopping && nats_connected && shards.values().all(|p| p.is_connected());
        Readiness {
            ready,
            nats_connected,
            stopping,
            shards,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_shard_and_nats() {
        let status = Status::new(4..=5);
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
        status.set_shard(99, ShardPhase::Active); // not owned: ignored
        assert_eq!(status.readiness().shards.len(), 2);
    }
}
