//! Request Guild Members (op 8) and the GUILD_MEMBERS_CHUNK dispatches that
//! answer it, following Discord's documentation and, where that is silent,
//! what Discord was seen doing:
//!
//! - An empty `query` asks for the member list (all of it with `limit` 0,
//!   otherwise the first `limit`) and needs the GUILD_MEMBERS intent. A
//!   session without it gets no answer at all: Discord neither closes nor
//!   answers (discord-api-docs#5855, discordrb#53), so neither does the
//!   simulator, although the request is recorded.
//! - A non-empty `query` matches the start of usernames or nicknames,
//!   ignoring case, and returns at most `limit`, never more than 100.
//! - `user_ids` (one id or up to 100) returns those members and, always,
//!   `not_found` with the ids that are not members.
//! - At most 1,000 members per chunk, and at least one chunk. Every chunk
//!   carries the nonce; one over 32 bytes is dropped, as Discord does.
//! - A guild the session's shard does not serve gets no answer: Discord
//!   documents none, and its gateway only knows the guilds of the shard.
//! - All members of one guild at most once per window (Discord: 30 s, per
//!   guild for the whole bot); a request within it gets RATE_LIMITED.
//! - A payload that does not decode closes 4002, like the other opcodes
//!   and as Discord did for an op 8 (Cogmasters/concord#137). One that
//!   decodes but is not a valid request closes 4001, which Discord
//!   documents as "an invalid payload for an opcode" and sent for a request
//!   without `query` (discord-api-docs#1372): neither `query` nor
//!   `user_ids`, a `query` without `limit`, and (undocumented, so chosen
//!   here) both at once or over 100 ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use wire::{GuildId, UserId};

use crate::config::intents;
use crate::discord_json::{self, ChunkInfo};
use crate::gateway::sessions::Session;
use crate::gateway::transcript::{IgnoredMemberRequest, MemberRequest, MemberRequestAnswer};
use crate::ids::shard_for_guild;
use crate::lock;
use crate::state::Shared;
use crate::world::{GuildState, World};

/// Discord's largest chunk.
const CHUNK_SIZE: usize = 1_000;
const MAX_USER_IDS: usize = 100;
const MAX_QUERY_RESULTS: usize = 100;
const MAX_NONCE_BYTES: usize = 32;
/// Chunks of one answer in the session log but not yet sent. More would
/// let a big answer run ahead of the dispatches that happen meanwhile;
/// fewer would leave the connection idle while the next chunk is built.
const CHUNKS_IN_FLIGHT: usize = 2;
/// How often a producer waiting on a disconnected session checks whether
/// the session is still resumable.
const DETACHED_POLL: Duration = Duration::from_secs(1);

/// Why a Request Guild Members closes the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum InvalidRequest {
    #[error("Decode error.")]
    Decode,
    #[error("Request Guild Members needs query or user_ids.")]
    NoSelection,
    #[error("Request Guild Members takes query or user_ids, not both.")]
    BothSelections,
    #[error("Request Guild Members with a query needs a limit.")]
    QueryWithoutLimit,
    #[error("Request Guild Members takes at most 100 user_ids.")]
    TooManyUserIds,
}

impl InvalidRequest {
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            InvalidRequest::Decode => 4002,
            _ => 4001,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawRequest {
    guild_id: GuildId,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    presences: Option<bool>,
    #[serde(default)]
    user_ids: Option<UserIds>,
    #[serde(default)]
    nonce: Option<String>,
}

/// Discord takes one snowflake or a list (twilight sends the former for
/// a single member).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum UserIds {
    One(UserId),
    Many(Vec<UserId>),
}

impl UserIds {
    fn into_vec(self) -> Vec<UserId> {
        match self {
            UserIds::One(id) => vec![id],
            UserIds::Many(ids) => ids,
        }
    }
}

/// Which members a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selection {
    /// Empty query, limit 0: the whole guild.
    All,
    /// Members whose username or nickname starts with `query`, at most `limit`.
    Prefix {
        query: String,
        limit: usize,
    },
    Ids(Vec<UserId>),
}

impl Selection {
    fn needs_member_intent(&self) -> bool {
        match self {
            Selection::All => true,
            Selection::Prefix { query, .. } => query.is_empty(),
            Selection::Ids(_) => false,
        }
    }
}

/// A decoded, valid request.
#[derive(Debug)]
pub(crate) struct Request {
    guild_id: GuildId,
    selection: Selection,
    /// The nonce the answer carries: `None` when none was sent or it was too long.
    nonce: Option<String>,
    sent: RawRequest,
}

impl Request {
    fn record(self, session_id: &str, answer: MemberRequestAnswer) -> MemberRequest {
        MemberRequest {
            session_id: session_id.to_owned(),
            guild_id: self.guild_id,
            query: self.sent.query,
            limit: self.sent.limit,
            user_ids: self.sent.user_ids.map(UserIds::into_vec),
            presences: self.sent.presences.unwrap_or(false),
            nonce: self.sent.nonce,
            answer,
        }
    }
}

pub(crate) fn parse(data: Value) -> Result<Request, InvalidRequest> {
    let sent: RawRequest = serde_json::from_value(data).map_err(|_| InvalidRequest::Decode)?;
    let user_ids = sent.user_ids.clone().map(UserIds::into_vec);
    let selection = selection(sent.query.as_deref(), sent.limit, user_ids.as_deref())?;
    let nonce = sent
        .nonce
        .clone()
        .filter(|nonce| nonce.len() <= MAX_NONCE_BYTES);
    Ok(Request {
        guild_id: sent.guild_id,
        selection,
        nonce,
        sent,
    })
}

fn selection(
    query: Option<&str>,
    limit: Option<u64>,
    user_ids: Option<&[UserId]>,
) -> Result<Selection, InvalidRequest> {
    match (query, user_ids) {
        (None, None) => Err(InvalidRequest::NoSelection),
        (Some(_), Some(_)) => Err(InvalidRequest::BothSelections),
        (None, Some(ids)) if ids.len() > MAX_USER_IDS => Err(InvalidRequest::TooManyUserIds),
        (None, Some(ids)) => Ok(Selection::Ids(unique(ids))),
        (Some(query), None) => {
            let limit = limit.ok_or(InvalidRequest::QueryWithoutLimit)?;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            Ok(match (query.is_empty(), limit) {
                (true, 0) => Selection::All,
                (true, limit) => Selection::Prefix {
                    query: String::new(),
                    limit,
                },
                (false, 0) => Selection::Prefix {
                    query: query.to_owned(),
                    limit: MAX_QUERY_RESULTS,
                },
                (false, limit) => Selection::Prefix {
                    query: query.to_owned(),
                    limit: limit.min(MAX_QUERY_RESULTS),
                },
            })
        }
    }
}

/// The ids in order of first appearance, each once.
fn unique(ids: &[UserId]) -> Vec<UserId> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Discord's limit on requests for all of a guild's members: one per
/// guild per window. Discord's announcement says "per guild per bot" and
/// also "per guild per session"; this takes the stricter reading (the
/// whole bot), so that a client which gets by here gets by on Discord.
#[derive(Debug)]
pub(crate) struct MemberRequestLimiter {
    window: Duration,
    last: HashMap<GuildId, Instant>,
}

impl MemberRequestLimiter {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            last: HashMap::new(),
        }
    }

    /// Takes the guild's slot, or says how long until it is free. A refused
    /// request does not move the window.
    pub(crate) fn try_acquire(&mut self, guild_id: GuildId, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last.get(&guild_id) {
            let elapsed = now.saturating_duration_since(*last);
            if elapsed < self.window {
                return Err(self.window - elapsed);
            }
        }
        let window = self.window;
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        self.last.insert(guild_id, now);
        Ok(())
    }
}

/// Answers a valid request: appends RATE_LIMITED, or starts producing the
/// chunks, or nothing. Returns the request as the transcript records it.
pub(crate) fn answer(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    request: Request,
) -> MemberRequest {
    let answer = {
        // Held while deciding so that RATE_LIMITED takes its place among the
        // dispatches as the world changes, like every other dispatch.
        let world = lock(&shared.world);
        match decide(shared, session, &world, &request) {
            Decision::Ignore(reason) => MemberRequestAnswer::Ignored { reason },
            Decision::RateLimited(retry_after) => {
                let data = discord_json::members_rate_limited(
                    request.guild_id,
                    request.nonce.as_deref(),
                    retry_after,
                );
                session.append(
                    "RATE_LIMITED",
                    Some(request.guild_id),
                    data.to_string().into(),
                );
                MemberRequestAnswer::RateLimited {
                    retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                }
            }
            Decision::Serve(job) => {
                let answer = job.summary();
                tokio::spawn(produce(Arc::clone(shared), Arc::clone(session), job));
                answer
            }
        }
    };
    request.record(&session.id, answer)
}

enum Decision {
    Ignore(IgnoredMemberRequest),
    RateLimited(Duration),
    Serve(ChunkJob),
}

fn decide(shared: &Shared, session: &Session, world: &World, request: &Request) -> Decision {
    let guild = match served_guild(world, session, request.guild_id) {
        Ok(guild) => guild,
        Err(reason) => return Decision::Ignore(reason),
    };
    if request.selection.needs_member_intent() && session.intents & intents::GUILD_MEMBERS == 0 {
        return Decision::Ignore(IgnoredMemberRequest::MissingGuildMembersIntent);
    }
    if request.selection == Selection::All {
        let acquired = lock(&shared.member_requests).try_acquire(request.guild_id, Instant::now());
        if let Err(retry_after) = acquired {
            return Decision::RateLimited(retry_after);
        }
    }
    Decision::Serve(ChunkJob::new(guild, session, request))
}

fn served_guild<'w>(
    world: &'w World,
    session: &Session,
    guild_id: GuildId,
) -> Result<&'w GuildState, IgnoredMemberRequest> {
    let on_shard = shard_for_guild(guild_id, session.shard_count) == session.shard_id;
    let guild = world
        .guilds
        .get(&guild_id)
        .filter(|guild| guild.bot_present && on_shard)
        .ok_or(IgnoredMemberRequest::GuildNotOnShard)?;
    if !guild.available {
        return Err(IgnoredMemberRequest::GuildUnavailable);
    }
    Ok(guild)
}

/// The members an answer lists, fixed when the request arrives; each
/// chunk reads their current state when it is built.
#[derive(Debug)]
struct ChunkJob {
    guild_id: GuildId,
    members: Vec<UserId>,
    not_found: Option<Vec<UserId>>,
    nonce: Option<String>,
    presences: bool,
}

impl ChunkJob {
    fn new(guild: &GuildState, session: &Session, request: &Request) -> Self {
        let (members, not_found) = match &request.selection {
            Selection::All => (guild.members.keys().copied().collect(), None),
            Selection::Prefix { query, limit } => (matching(guild, query, *limit), None),
            Selection::Ids(ids) => {
                let (found, missing) = ids.iter().partition(|id| guild.members.contains_key(id));
                (found, Some(missing))
            }
        };
        Self {
            guild_id: guild.id,
            members,
            not_found,
            nonce: request.nonce.clone(),
            // Discord leaves presences out without the intent.
            presences: request.sent.presences == Some(true)
                && session.intents & intents::GUILD_PRESENCES != 0,
        }
    }

    fn chunk_count(&self) -> u32 {
        let chunks = self.members.len().div_ceil(CHUNK_SIZE).max(1);
        u32::try_from(chunks).unwrap_or(u32::MAX)
    }

    fn summary(&self) -> MemberRequestAnswer {
        MemberRequestAnswer::Chunks {
            members: self.members.len(),
            chunk_count: self.chunk_count(),
            not_found: self.not_found.as_ref().map_or(0, Vec::len),
        }
    }

    /// One chunk's JSON, from the members' state in `world` now. A member
    /// who left since the request is left out.
    fn chunk(
        &self,
        world: &World,
        index: u32,
        ids: &[UserId],
    ) -> Result<String, serde_json::Error> {
        let guild = world.guilds.get(&self.guild_id);
        let members = ids
            .iter()
            .filter_map(|id| guild.and_then(|guild| guild.members.get(id)));
        let info = ChunkInfo {
            guild_id: self.guild_id,
            chunk_index: index,
            chunk_count: self.chunk_count(),
            not_found: self.not_found.as_deref(),
            nonce: self.nonce.as_deref(),
            presences: self.presences,
        };
        discord_json::members_chunk(&info, members)
    }
}

fn matching(guild: &GuildState, query: &str, limit: usize) -> Vec<UserId> {
    guild
        .members
        .values()
        .filter(|member| {
            starts_with_ignoring_case(&member.username, query)
                || member
                    .nick
                    .as_deref()
                    .is_some_and(|nick| starts_with_ignoring_case(nick, query))
        })
        .map(|member| member.user_id)
        .take(limit)
        .collect()
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    let mut text = text.chars().flat_map(char::to_lowercase);
    prefix
        .chars()
        .flat_map(char::to_lowercase)
        .all(|c| text.next() == Some(c))
}

/// Appends the job's chunks to the session log, each once the client has
/// read all but [`CHUNKS_IN_FLIGHT`] - 1 of the earlier ones. Dispatches
/// that happen meanwhile so go out between chunks instead of after a
/// hundred of them, and a client that stops reading stops the production.
/// Each chunk is built and appended under the world lock, one chunk at a
/// time: it then shows the members as the dispatches before it left them.
async fn produce(shared: Arc<Shared>, session: Arc<Session>, job: ChunkJob) {
    let mut delivered = session.subscribe_delivered();
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let pieces = job.members.chunks(CHUNK_SIZE).chain(
        // An answer without members is still one (empty) chunk.
        job.members.is_empty().then_some(&[][..]),
    );
    for (index, ids) in (0u32..).zip(pieces) {
        if in_flight.len() >= CHUNKS_IN_FLIGHT {
            let Some(oldest) = in_flight.pop_front() else {
                return;
            };
            if !until_delivered(&shared, &session, &mut delivered, oldest).await {
                return;
            }
        }
        let world = lock(&shared.world);
        if session.is_invalidated() {
            return;
        }
        let data = match job.chunk(&world, index, ids) {
            Ok(data) => data,
            Err(error) => {
                tracing::error!(%error, guild_id = %job.guild_id, "a member chunk does not serialise");
                return;
            }
        };
        let seq = session.append("GUILD_MEMBERS_CHUNK", Some(job.guild_id), data.into());
        drop(world);
        in_flight.push_back(seq);
    }
}

/// Waits until the client was sent `seq`; false once the session can no
/// longer be delivered to or the simulator shuts down.
async fn until_delivered(
    shared: &Shared,
    session: &Session,
    delivered: &mut tokio::sync::watch::Receiver<u64>,
    seq: u64,
) -> bool {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *delivered.borrow_and_update() >= seq {
            return true;
        }
        if session.expired(shared.sessions.ttl()) || *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            changed = delivered.changed() => if changed.is_err() { return false },
            _ = shutdown.changed() => return false,
            () = tokio::time::sleep(DETACHED_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(data: Value) -> Result<Selection, InvalidRequest> {
        parse(data).map(|request| request.selection)
    }

    #[test]
    fn empty_query_with_limit_zero_is_the_whole_guild() {
        assert_eq!(
            parsed(json!({"guild_id": "1", "query": "", "limit": 0})),
            Ok(Selection::All)
        );
        assert_eq!(
            parsed(json!({"guild_id": "1", "query": "", "limit": 5})),
            Ok(Selection::Prefix {
                query: String::new(),
                limit: 5
            })
        );
    }

    #[test]
    fn a_query_returns_at_most_100() {
        for limit in [0, 500] {
            assert_eq!(
                parsed(json!({"guild_id": "1", "query": "al", "limit": limit})),
                Ok(Selection::Prefix {
                    query: "al".into(),
                    limit: 100
                })
            );
        }
    }

    #[test]
    fn user_ids_may_be_one_id_or_a_list_and_repeat() {
        let one = UserId::new(7).expect("not 0");
        assert_eq!(
            parsed(json!({"guild_id": "1", "user_ids": "7"})),
            Ok(Selection::Ids(vec![one]))
        );
        assert_eq!(
            parsed(json!({"guild_id": "1", "user_ids": ["7", "7"]})),
            Ok(Selection::Ids(vec![one]))
        );
    }

    #[test]
    fn invalid_requests_close_with_discords_codes() {
        let too_many: Vec<String> = (1..=101).map(|n| n.to_string()).collect();
        let cases = [
            (json!({"guild_id": "x", "query": "", "limit": 0}), 4002),
            (json!({"query": "", "limit": 0}), 4002),
            (json!({"guild_id": "1", "user_ids": [1], "nonce": 5}), 4002),
            (json!(null), 4002),
            (json!({"guild_id": "1"}), 4001),
            (json!({"guild_id": "1", "query": "a"}), 4001),
            (
                json!({"guild_id": "1", "query": "", "limit": 0, "user_ids": []}),
                4001,
            ),
            (json!({"guild_id": "1", "user_ids": too_many}), 4001),
        ];
        for (data, code) in cases {
            let shown = data.to_string();
            let error = parse(data).expect_err(&shown);
            assert_eq!(error.close_code(), code, "{shown}");
        }
    }

    #[test]
    fn a_nonce_over_32_bytes_is_dropped_but_recorded() {
        let long = "n".repeat(33);
        let request =
            parse(json!({"guild_id": "1", "query": "", "limit": 0, "nonce": long})).expect("valid");
        assert_eq!(request.nonce, None);
        let record = request.record("s", MemberRequestAnswer::RateLimited { retry_after_ms: 1 });
        assert_eq!(record.nonce.as_deref(), Some(long.as_str()));
        let request =
            parse(json!({"guild_id": "1", "query": "", "limit": 0, "nonce": "n".repeat(32)}))
                .expect("valid");
        assert_eq!(request.nonce.map(|n| n.len()), Some(32));
    }

    #[test]
    fn prefixes_match_ignoring_case() {
        assert!(starts_with_ignoring_case("Alice", "al"));
        assert!(starts_with_ignoring_case("ÉMILE", "émi"));
        assert!(starts_with_ignoring_case("bob", ""));
        assert!(!starts_with_ignoring_case("al", "alice"));
        assert!(!starts_with_ignoring_case("bob", "al"));
    }

    #[test]
    fn all_members_once_per_guild_per_window() {
        let mut limiter = MemberRequestLimiter::new(Duration::from_secs(30));
        let a = GuildId::new(1).expect("not 0");
        let b = GuildId::new(2).expect("not 0");
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire(a, t0), Ok(()));
        assert_eq!(limiter.try_acquire(b, t0), Ok(()), "another guild");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.try_acquire(a, later), Err(Duration::from_secs(20)));
        assert_eq!(
            limiter.try_acquire(a, later + Duration::from_secs(5)),
            Err(Duration::from_secs(15)),
            "a refused request does not restart the window"
        );
        assert_eq!(limiter.try_acquire(a, t0 + Duration::from_secs(30)), Ok(()));
    }
}
