//! What each shard was sent and what it sent back, for tests and the control
//! API. Recent frames are kept up to a limit; counters are kept forever.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wire::GuildId;

/// One frame the simulator sent to a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentFrame {
    pub connection_id: u64,
    pub session_id: Option<String>,
    pub op: u8,
    /// Dispatch event name (`t`).
    pub event: Option<String>,
    /// Dispatch sequence (`s`).
    pub seq: Option<u64>,
    /// The guild a dispatch was about.
    pub guild_id: Option<GuildId>,
    /// True when the frame was sent as part of a Resume replay.
    pub replay: bool,
    pub at_ms: i64,
}

/// Something that happened on a shard's connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardEvent {
    Identified {
        connection_id: u64,
        session_id: String,
        /// Whether the connection asked for `compress=zstd-stream`.
        compressed: bool,
    },
    Resumed {
        connection_id: u64,
        session_id: String,
        compressed: bool,
        from_seq: u64,
        replayed: u64,
    },
    ResumeRefused {
        connection_id: u64,
        reason: String,
    },
    IdentifyRateLimited {
        connection_id: u64,
    },
    /// The simulator closed the connection (fault, validation failure or timeout).
    ClosedByServer {
        connection_id: u64,
        code: Option<u16>,
        reason: String,
    },
    /// The client closed it, cleanly (`code`) or not.
    ClosedByClient {
        connection_id: u64,
        code: Option<u16>,
    },
    FaultInjected {
        connection_id: u64,
        fault: String,
    },
}

/// A shard's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardTranscript {
    /// Most recent frames sent, oldest first.
    pub sent: VecDeque<SentFrame>,
    /// Connection-level history, oldest first.
    pub events: VecDeque<ShardEvent>,
    /// Dispatches sent, by event name, over the simulator's life.
    pub dispatch_counts: BTreeMap<String, u64>,
    pub identifies: u64,
    pub resumes: u64,
    pub heartbeats_received: u64,
}

impl ShardTranscript {
    pub(crate) fn record_sent(&mut self, frame: SentFrame, limit: usize) {
        if let Some(event) = &frame.event {
            *self.dispatch_counts.entry(event.clone()).or_default() += 1;
        }
        if limit == 0 {
            return;
        }
        if self.sent.len() >= limit {
            self.sent.pop_front();
        }
        self.sent.push_back(frame);
    }

    pub(crate) fn record_event(&mut self, event: ShardEvent, limit: usize) {
        match &event {
            ShardEvent::Identified { .. } => self.identifies += 1,
            ShardEvent::Resumed { .. } => self.resumes += 1,
            _ => {}
        }
        if self.events.len() >= limit.max(100) {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
