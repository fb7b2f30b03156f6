//! What each shard was sent and what it sent back, for tests and the control
//! API. Recent frames are kept up to a limit; counters are kept forever.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wire::{GuildId, UserId};

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
    /// The client sent Request Guild Members (op 8).
    MembersRequested {
        connection_id: u64,
        request: MemberRequest,
    },
}

/// A Request Guild Members (op 8) as the client sent it, and how the
/// simulator answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRequest {
    pub session_id: String,
    pub guild_id: GuildId,
    pub query: Option<String>,
    pub limit: Option<u64>,
    /// A single id is recorded as a list of one.
    pub user_ids: Option<Vec<UserId>>,
    pub presences: bool,
    /// As sent, also when it is over 32 bytes and so left out of the answer.
    pub nonce: Option<String>,
    pub answer: MemberRequestAnswer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemberRequestAnswer {
    /// GUILD_MEMBERS_CHUNK dispatches follow. They are built as the client
    /// reads, so some may not be sent yet.
    Chunks {
        members: usize,
        chunk_count: u32,
        not_found: usize,
    },
    /// A RATE_LIMITED dispatch.
    RateLimited { retry_after_ms: u64 },
    /// Nothing at all, as Discord does.
    Ignored { reason: IgnoredMemberRequest },
}

/// Why a Request Guild Members got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoredMemberRequest {
    /// The whole member list (empty `query`) without the GUILD_MEMBERS intent.
    MissingGuildMembersIntent,
    /// The guild is unknown, the bot is not in it, or another shard serves it.
    GuildNotOnShard,
    /// The guild has an outage.
    GuildUnavailable,
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
    /// The Request Guild Members the shard sent that are still in
    /// [`ShardTranscript::events`], oldest first.
    pub fn member_requests(&self) -> impl Iterator<Item = &MemberRequest> {
        self.events.iter().filter_map(|event| match event {
            ShardEvent::MembersRequested { request, .. } => Some(request),
            _ => None,
        })
    }

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
