//! Gateway sessions: the per-session dispatch log that both live delivery and
//! Resume read from.
//!
//! Every dispatch is appended to the log of each session whose shard owns the
//! guild, whether or not a connection is attached. A connection delivers by
//! walking the log from its cursor; a Resume simply starts the cursor at the
//! client's last sequence. So a dispatch is never lost while a shard is
//! reconnecting, and replay and live delivery cannot reorder.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wire::GuildId;

use crate::ids::shard_for_guild;
use crate::lock;
use crate::world::Dispatch;

#[derive(Clone, Debug)]
pub(crate) struct LogEntry {
    pub seq: u64,
    pub event: &'static str,
    /// `None` for READY, which belongs to no guild.
    pub guild_id: Option<GuildId>,
    pub data: Arc<str>,
}

#[derive(Debug)]
struct SessionState {
    log: VecDeque<LogEntry>,
    last_seq: u64,
    delivered: u64,
    attached: Option<u64>,
    detached_at: Option<Instant>,
    invalidated: bool,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    pub shard_id: u32,
    pub shard_count: u32,
    pub intents: u64,
    state: Mutex<SessionState>,
    last_seq: watch::Sender<u64>,
    /// Last sequence sent to a client, for producers that pace themselves on
    /// the client's reading (member chunks).
    delivered: watch::Sender<u64>,
    resume_buffer: usize,
}

/// Why a Resume was refused (answered with op 9, `d: false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResumeRefused {
    Unknown,
    Invalidated,
    Expired,
    /// The client asks for events the log no longer holds, or that never were.
    SequenceOutOfRange,
    WrongShard,
}

impl Session {
    fn new(id: String, shard: [u32; 2], intents: u64, resume_buffer: usize) -> Self {
        Self {
            id,
            shard_id: shard[0],
            shard_count: shard[1],
            intents,
            state: Mutex::new(SessionState {
                log: VecDeque::new(),
                last_seq: 0,
                delivered: 0,
                attached: None,
                detached_at: None,
                invalidated: false,
            }),
            last_seq: watch::channel(0).0,
            delivered: watch::channel(0).0,
            resume_buffer: resume_buffer.max(1),
        }
    }

    pub(crate) fn append(
        &self,
        event: &'static str,
        guild_id: Option<GuildId>,
        data: Arc<str>,
    ) -> u64 {
        let mut state = lock(&self.state);
        state.last_seq += 1;
        let seq = state.last_seq;
        state.log.push_back(LogEntry {
            seq,
            event,
            guild_id,
            data,
        });
        // Keep undelivered entries while a client reads (the traffic generator
        // throttles on lag instead), but never let a detached session grow
        // without bound.
        let detached = state.attached.is_none();
        while state.log.len() > self.resume_buffer {
            match state.log.front() {
                Some(front) if detached || front.seq <= state.delivered => {
                    state.log.pop_front();
                }
                _ => break,
            }
        }
        drop(state);
        self.last_seq.send_replace(seq);
        seq
    }

    /// Entries after `cursor`, at most `max`.
    pub(crate) fn entries_after(&self, cursor: u64, max: usize) -> Vec<LogEntry> {
        let state = lock(&self.state);
        let Some(first) = state.log.front().map(|e| e.seq) else {
            return Vec::new();
        };
        let start = cursor.saturating_add(1).saturating_sub(first) as usize;
        state.log.iter().skip(start).take(max).cloned().collect()
    }

    pub(crate) fn mark_delivered(&self, seq: u64) {
        let mut state = lock(&self.state);
        state.delivered = state.delivered.max(seq);
        self.delivered.send_replace(state.delivered);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    pub(crate) fn subscribe_delivered(&self) -> watch::Receiver<u64> {
        self.delivered.subscribe()
    }

    #[cfg(test)]
    pub(crate) fn last_seq(&self) -> u64 {
        lock(&self.state).last_seq
    }

    /// Undelivered dispatches of an attached session (0 when detached).
    pub(crate) fn lag(&self) -> u64 {
        let state = lock(&self.state);
        if state.attached.is_some() {
            state.last_seq.saturating_sub(state.delivered)
        } else {
            0
        }
    }

    /// Attaches a connection, returning the one it displaced.
    pub(crate) fn attach(&self, connection_id: u64) -> Option<u64> {
        let mut state = lock(&self.state);
        state.detached_at = None;
        state.attached.replace(connection_id)
    }

    pub(crate) fn detach(&self, connection_id: u64) {
        let mut state = lock(&self.state);
        if state.attached == Some(connection_id) {
            state.attached = None;
            state.detached_at = Some(Instant::now());
        }
    }

    pub(crate) fn invalidate(&self) {
        lock(&self.state).invalidated = true;
    }

    pub(crate) fn is_invalidated(&self) -> bool {
        lock(&self.state).invalidated
    }

    /// Checks that a Resume from `seq` can be served, and if so marks
    /// everything up to `seq` delivered.
    pub(crate) fn check_resume(
        &self,
        seq: u64,
        shard: Option<[u32; 2]>,
        ttl: Duration,
    ) -> Result<(), ResumeRefused> {
        let mut state = lock(&self.state);
        if state.invalidated {
            return Err(ResumeRefused::Invalidated);
        }
        if state.detached_at.is_some_and(|at| at.elapsed() > ttl) {
            return Err(ResumeRefused::Expired);
        }
        if shard.is_some_and(|s| s != [self.shard_id, self.shard_count]) {
            return Err(ResumeRefused::WrongShard);
        }
        let oldest_kept = state.log.front().map_or(state.last_seq + 1, |e| e.seq);
        if seq > state.last_seq || seq + 1 < oldest_kept {
            return Err(ResumeRefused::SequenceOutOfRange);
        }
        state.delivered = seq;
        self.delivered.send_replace(seq);
        Ok(())
    }

    /// Invalidated, or detached for longer than `ttl`: it can never be
    /// delivered to again.
    pub(crate) fn expired(&self, ttl: Duration) -> bool {
        let state = lock(&self.state);
        state.invalidated || state.detached_at.is_some_and(|at| at.elapsed() > ttl)
    }

    fn wants(&self, dispatch: &Dispatch) -> bool {
        shard_for_guild(dispatch.guild_id, self.shard_count) == self.shard_id
            && (dispatch.intent == 0 || self.intents & dispatch.intent != 0)
    }
}

/// All sessions of the simulator, keyed by session id.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    resume_buffer: usize,
    ttl: Duration,
}

impl Sessions {
    pub(crate) fn new(resume_buffer: usize, ttl: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            resume_buffer,
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn create(&self, shard: [u32; 2], intents: u64) -> Arc<Session> {
        let id = format!("{:032x}", rand::random::<u128>());
        let session = Arc::new(Session::new(id.clone(), shard, intents, self.resume_buffer));
        let mut map = lock(&self.map);
        map.retain(|_, s| !s.expired(self.ttl));
        map.insert(id, Arc::clone(&session));
        session
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.map).get(id).cloned()
    }

    /// Appends each dispatch to every session that should receive it.
    pub(crate) fn fan_out(&self, dispatches: &[Dispatch]) {
        if dispatches.is_empty() {
            return;
        }
        let map = lock(&self.map);
        for session in map.values() {
            if session.is_invalidated() {
                continue;
            }
            for dispatch in dispatches {
                if session.wants(dispatch) {
                    session.append(
                        dispatch.event,
                        Some(dispatch.guild_id),
                        Arc::clone(&dispatch.data),
                    );
                }
            }
        }
    }

    /// Whether any session could receive a dispatch now.
    pub(crate) fn any_live(&self) -> bool {
        lock(&self.map).values().any(|s| !s.is_invalidated())
    }

    pub(crate) fn max_lag(&self) -> u64 {
        lock(&self.map).values().map(|s| s.lag()).max().unwrap_or(0)
    }

    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.map).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(guild_id: u64) -> Dispatch {
        Dispatch {
            guild_id: GuildId::new(guild_id).expect("test guilds are not 0"),
            event: "GUILD_MEMBER_ADD",
            data: Arc::from("{}"),
            intent: crate::config::intents::GUILD_MEMBERS,
        }
    }

    #[test]
    fn dispatches_reach_only_the_owning_shard_with_the_intent() {
        let sessions = Sessions::new(100, Duration::from_secs(60));
        let s0 = sessions.create([0, 2], crate::config::intents::GUILD_MEMBERS);
        let s1 = sessions.create([1, 2], crate::config::intents::GUILD_MEMBERS);
        let s1_no_intent = sessions.create([1, 2], crate::config::intents::GUILDS);
        let guild_on_1 = 1 << 22;
        sessions.fan_out(&[dispatch(guild_on_1)]);
        assert_eq!(s0.last_seq(), 0);
        assert_eq!(s1.last_seq(), 1);
        assert_eq!(s1_no_intent.last_seq(), 0);
    }

    #[test]
    fn resume_serves_exactly_the_entries_after_the_client_sequence() {
        let sessions = Sessions::new(100, Duration::from_secs(60));
        let s = sessions.create([0, 1], crate::config::intents::GUILD_MEMBERS);
        for _ in 0..5 {
            sessions.fan_out(&[dispatch(1)]);
        }
        assert!(s.check_resume(3, Some([0, 1]), sessions.ttl()).is_ok());
        let seqs: Vec<u64> = s.entries_after(3, 100).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(
            s.check_resume(6, None, sessions.ttl()),
            Err(ResumeRefused::SequenceOutOfRange)
        );
        assert_eq!(
            s.check_resume(3, Some([0, 2]), sessions.ttl()),
            Err(ResumeRefused::WrongShard)
        );
    }

    #[test]
    fn a_detached_session_keeps_only_its_resume_buffer() {
        let sessions = Sessions::new(3, Duration::from_secs(60));
        let s = sessions.create([0, 1], crate::config::intents::GUILD_MEMBERS);
        for _ in 0..10 {
            sessions.fan_out(&[dispatch(1)]);
        }
        let seqs: Vec<u64> = s.entries_after(0, 100).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![8, 9, 10]);
        assert_eq!(
            s.check_resume(2, None, sessions.ttl()),
            Err(ResumeRefused::SequenceOutOfRange)
        );
        assert!(s.check_resume(7, None, sessions.ttl()).is_ok());
    }

    #[test]
    fn an_attached_session_keeps_what_it_has_not_delivered() {
        let sessions = Sessions::new(3, Duration::from_secs(60));
        let s = sessions.create([0, 1], crate::config::intents::GUILD_MEMBERS);
        s.attach(1);
        for _ in 0..10 {
            sessions.fan_out(&[dispatch(1)]);
        }
        assert_eq!(s.entries_after(0, 100).len(), 10);
        assert_eq!(s.lag(), 10);
        s.mark_delivered(10);
        assert_eq!(s.lag(), 0);
    }

    #[test]
    fn invalidated_sessions_cannot_resume_or_receive() {
        let sessions = Sessions::new(10, Duration::from_secs(60));
        let s = sessions.create([0, 1], crate::config::intents::GUILD_MEMBERS);
        s.invalidate();
        sessions.fan_out(&[dispatch(1)]);
        assert_eq!(s.last_seq(), 0);
        assert_eq!(
            s.check_resume(0, None, sessions.ttl()),
            Err(ResumeRefused::Invalidated)
        );
    }
}
