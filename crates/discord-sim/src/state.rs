//! State shared by the gateway, the REST API and the control API.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::SimConfig;
use crate::faults::{CallbackFault, Fault};
use crate::gateway::identify_limit::IdentifyLimiter;
use crate::gateway::member_requests::MemberRequestLimiter;
use crate::gateway::sessions::Sessions;
use crate::gateway::transcript::{SentFrame, ShardEvent, ShardTranscript};
use crate::http::ratelimit::RestLimiter;
use crate::lock;
use crate::oauth::OAuth;
use crate::traffic::TrafficProgress;
use crate::world::{Changed, World};
use crate::SimError;

/// Instructions to one connection task.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    Fault(Fault),
    /// Another connection resumed this one's session.
    Displaced,
}

#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub shard: Option<[u32; 2]>,
    pub tx: mpsc::UnboundedSender<ConnCommand>,
}

pub(crate) struct Shared {
    pub config: SimConfig,
    pub gateway_url: String,
    pub world: Mutex<World>,
    pub sessions: Sessions,
    pub connections: Mutex<HashMap<u64, ConnectionEntry>>,
    next_connection: AtomicU64,
    pub identify: Mutex<IdentifyLimiter>,
    /// Locked only while holding `world`.
    pub member_requests: Mutex<MemberRequestLimiter>,
    pub transcripts: Mutex<BTreeMap<u32, ShardTranscript>>,
    pub rest: Mutex<RestLimiter>,
    /// Never locked while holding `world`.
    pub oauth: Mutex<OAuth>,
    pub shutdown: watch::Sender<bool>,
    pub traffic: Mutex<HashMap<u64, Arc<TrafficProgress>>>,
    /// Guilds whose role changes are answered 403 (the bot lacks Manage Roles).
    pub roles_forbidden: Mutex<HashSet<wire::GuildId>>,
    /// Role changes received over REST, whatever the answer.
    pub role_requests: AtomicU64,
    pub callbacks: Mutex<CallbackFaults>,
    /// Bumped to let every held interaction callback go on.
    pub callback_release: watch::Sender<u64>,
}

/// Faults queued for the next interaction callbacks, and how many
/// callbacks are held now.
#[derive(Debug, Default)]
pub(crate) struct CallbackFaults {
    pub queued: VecDeque<CallbackFault>,
    pub held: usize,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, gateway_url: String) -> Self {
        Self {
            sessions: Sessions::new(
                config.resume_buffer,
                Duration::from_millis(config.session_ttl_ms),
            ),
            identify: Mutex::new(IdentifyLimiter::new(
                Duration::from_millis(config.identify_interval_ms),
                config.max_concurrency,
            )),
            member_requests: Mutex::new(MemberRequestLimiter::new(Duration::from_millis(
                config.member_request_window_ms,
            ))),
            rest: Mutex::new(RestLimiter::new(config.rest.clone())),
            world: Mutex::new(World::default()),
            oauth: Mutex::new(OAuth::default()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            transcripts: Mutex::new(BTreeMap::new()),
            shutdown: watch::channel(false).0,
            traffic: Mutex::new(HashMap::new()),
            callbacks: Mutex::new(CallbackFaults::default()),
            callback_release: watch::channel(0).0,
            roles_forbidden: Mutex::new(HashSet::new()),
            role_requests: AtomicU64::new(0),
            config,
            gateway_url,
        }
    }

    pub(crate) fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    /// Runs a change to the world and delivers its dispatches. The world lock
    /// is held while fanning out, so dispatches reach every session in the
    /// order the changes happened.
    pub(crate) fn apply<T>(
        &self,
        change: impl FnOnce(&mut World) -> Changed<T>,
    ) -> Result<T, SimError> {
        let mut world = lock(&self.world);
        let (value, dispatches) = change(&mut world)?;
        self.sessions.fan_out(&dispatches);
        Ok(value)
    }

    pub(crate) fn register_connection(&self, tx: mpsc::UnboundedSender<ConnCommand>) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        lock(&self.connections).insert(id, ConnectionEntry { shard: None, tx });
        id
    }

    pub(crate) fn set_connection_shard(&self, id: u64, shard: [u32; 2]) {
        if let Some(entry) = lock(&self.connections).get_mut(&id) {
            entry.shard = Some(shard);
        }
    }

    pub(crate) fn unregister_connection(&self, id: u64) {
        lock(&self.connections).remove(&id);
    }

    pub(crate) fn command_connection(&self, id: u64, command: ConnCommand) {
        if let Some(entry) = lock(&self.connections).get(&id) {
            let _ = entry.tx.send(command);
        }
    }

    /// Sends `fault` to every live connection identified as `shard_id`.
    pub(crate) fn inject(&self, shard_id: u32, fault: &Fault) -> usize {
        let connections = lock(&self.connections);
        connections
            .values()
            .filter(|c| c.shard.is_some_and(|s| s[0] == shard_id))
            .filter(|c| c.tx.send(ConnCommand::Fault(fault.clone())).is_ok())
            .count()
    }

    pub(crate) fn record_sent(&self, shard_id: u32, frame: SentFrame) {
        let limit = self.config.transcript_limit;
        lock(&self.transcripts)
            .entry(shard_id)
            .or_default()
            .record_sent(frame, limit);
    }

    pub(crate) fn record_event(&self, shard_id: u32, event: ShardEvent) {
        let limit = self.config.transcript_limit;
        lock(&self.transcripts)
            .entry(shard_id)
            .or_default()
            .record_event(event, limit);
    }

    pub(crate) fn record_heartbeat(&self, shard_id: u32) {
        lock(&self.transcripts)
            .entry(shard_id)
            .or_default()
            .heartbeats_received += 1;
    }
}
