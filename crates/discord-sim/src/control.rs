//! The control surface used by tests, the demo, benchmarks and the control
//! HTTP API: shape the world, generate traffic, inject faults, read state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wire::{GuildId, InteractionId, UserId};

use crate::faults::{CallbackFault, Fault};
use crate::gateway::transcript::ShardTranscript;
use crate::lock;
use crate::oauth::{Login, OAuthUser};
use crate::state::Shared;
use crate::traffic::{self, TrafficProgress, TrafficReport, TrafficSpec};
use crate::world::{
    member_info, CreatedInteraction, GuildInfo, InteractionInfo, MemberInfo, MemberPatch,
    NewInteraction, NewMember,
};
use crate::SimError;

/// Bulk guild creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuildsSpec {
    pub count: usize,
    pub members_per_guild: usize,
    /// Roles besides @everyone, named `role-1`, `role-2`, ….
    pub roles_per_guild: usize,
}

impl Default for GuildsSpec {
    fn default() -> Self {
        Self {
            count: 1,
            members_per_guild: 10,
            roles_per_guild: 3,
        }
    }
}

/// A shard as the simulator sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard_id: u32,
    pub shard_count: u32,
    /// Live connections identified or resumed as this shard.
    pub connections: usize,
    /// Resumable sessions (connected or not).
    pub sessions: usize,
    pub identifies: u64,
    pub resumes: u64,
    pub dispatches_sent: u64,
}

/// Totals across the simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    pub guilds: usize,
    pub members: usize,
    pub connections: usize,
    pub sessions: usize,
    pub identifies: u64,
    pub interactions: usize,
    /// REST requests answered 429, whatever the limit.
    pub rest_rate_limited: u64,
    /// Of those, the ones Discord's global (per bot, all routes) limit refused.
    pub rest_global_rate_limited: u64,
    /// Role additions and removals received (whatever the answer).
    pub role_requests: u64,
}

/// Handle to a traffic run in progress.
pub struct TrafficRun {
    pub id: u64,
    pub progress: Arc<TrafficProgress>,
    task: tokio::task::JoinHandle<TrafficReport>,
}

impl TrafficRun {
    /// Waits for the run to finish.
    pub async fn wait(self) -> TrafficReport {
        self.task.await.unwrap_or_default()
    }
}

/// Cheap to clone; all clones drive the same simulator.
#[derive(Clone)]
pub struct SimControl {
    pub(crate) shared: Arc<Shared>,
}

impl SimControl {
    pub fn create_guilds(&self, spec: &GuildsSpec) -> Vec<GuildId> {
        let threshold = self.shared.config.large_threshold;
        (0..spec.count)
            .filter_map(|_| {
                let sessions = &self.shared.sessions;
                self.shared
                    .apply(|w| {
                        // Asked under the world lock, which identify also
                        // holds, so no session can appear unannounced.
                        let announce = sessions.any_live();
                        w.create_guild(
                            None,
                            spec.members_per_guild,
                            spec.roles_per_guild,
                            threshold,
                            Shared::now_ms(),
                            announce,
                        )
                    })
                    .ok()
            })
            .collect()
    }

    pub fn guilds(&self) -> Vec<GuildInfo> {
        let world = lock(&self.shared.world);
        world.guilds.values().map(|g| world.guild_info(g)).collect()
    }

    pub fn guild(&self, guild_id: GuildId) -> Result<GuildInfo, SimError> {
        let world = lock(&self.shared.world);
        world.guild(guild_id).map(|g| world.guild_info(g))
    }

    /// The bot is removed from the guild: GUILD_DELETE without `unavailable`.
    pub fn remove_guild(&self, guild_id: GuildId) -> Result<(), SimError> {
        self.shared.apply(|w| w.remove_guild(guild_id, false))
    }

    /// While `forbidden`, the bot lacks Manage Roles in the guild: every
    /// role change there is answered 403 Missing Permissions (one of the
    /// "invalid requests" Discord counts towards a ban).
    pub fn forbid_role_changes(&self, guild_id: GuildId, forbidden: bool) {
        let mut guilds = lock(&self.shared.roles_forbidden);
        if forbidden {
            guilds.insert(guild_id);
        } else {
            guilds.remove(&guild_id);
        }
    }

    /// An outage: GUILD_DELETE with `unavailable: true`.
    pub fn guild_outage(&self, guild_id: GuildId) -> Result<(), SimError> {
        self.shared.apply(|w| w.remove_guild(guild_id, true))
    }

    /// Ends an outage or re-adds the bot: GUILD_CREATE.
    pub fn restore_guild(&self, guild_id: GuildId) -> Result<(), SimError> {
        let threshold = self.shared.config.large_threshold;
        self.shared
            .apply(|w| w.restore_guild(guild_id, threshold, Shared::now_ms()))
    }

    pub fn add_member(&self, guild_id: GuildId, member: NewMember) -> Result<UserId, SimError> {
        self.shared
            .apply(|w| w.add_member(guild_id, member, Shared::now_ms()))
    }

    pub fn remove_member(&self, guild_id: GuildId, user_id: UserId) -> Result<(), SimError> {
        self.shared.apply(|w| w.remove_member(guild_id, user_id))
    }

    pub fn update_member(
        &self,
        guild_id: GuildId,
        user_id: UserId,
        patch: MemberPatch,
    ) -> Result<MemberInfo, SimError> {
        self.shared
            .apply(|w| w.update_member(guild_id, user_id, patch))
    }

    pub fn member(&self, guild_id: GuildId, user_id: UserId) -> Result<MemberInfo, SimError> {
        let world = lock(&self.shared.world);
        let guild = world.guild(guild_id)?;
        guild
            .members
            .get(&user_id)
            .map(|m| member_info(guild_id, m))
            .ok_or(SimError::UnknownMember { guild_id, user_id })
    }

    pub fn members(&self, guild_id: GuildId) -> Result<Vec<MemberInfo>, SimError> {
        let world = lock(&self.shared.world);
        let guild = world.guild(guild_id)?;
        Ok(guild
            .members
            .values()
            .map(|m| member_info(guild_id, m))
            .collect())
    }

    /// Registers a person who can log in at `/oauth2/authorize` (or renames
    /// one registered before). Guild members can log in without this; use
    /// it for a person the world has not generated, then
    /// [`SimControl::set_member_permissions`] to put them in guilds.
    pub fn add_oauth_user(&self, user: OAuthUser) -> OAuthUser {
        lock(&self.shared.oauth)
            .users
            .insert(user.user_id, user.clone());
        user
    }

    /// Registered OAuth2 users, plus members who have logged in, by id.
    pub fn oauth_users(&self) -> Vec<OAuthUser> {
        lock(&self.shared.oauth).users.values().cloned().collect()
    }

    /// The next `/oauth2/authorize` request that names nobody itself (no
    /// `login_as`, no `deny`) logs in as `user_id`. Calls queue up: each
    /// request takes the oldest.
    pub fn next_login(&self, user_id: UserId) -> Result<(), SimError> {
        crate::http::oauth_api::known_user(&self.shared, user_id)
            .ok_or(SimError::UnknownUser(user_id))?;
        lock(&self.shared.oauth)
            .logins
            .push_back(Login::As(user_id));
        Ok(())
    }

    /// Like [`SimControl::next_login`], but the person refuses: the
    /// redirect carries `error=access_denied`.
    pub fn deny_next_login(&self) {
        lock(&self.shared.oauth).logins.push_back(Login::Deny);
    }

    /// Sets the permission bits `/users/@me/guilds` reports for `user_id` in
    /// `guild_id` (see [`crate::permissions`]), in place of those its roles
    /// grant. A user who is not yet a member joins the guild first (with
    /// GUILD_MEMBER_ADD), under their OAuth2 username or the name they have
    /// as a member elsewhere.
    pub fn set_member_permissions(
        &self,
        guild_id: GuildId,
        user_id: UserId,
        permissions: u64,
    ) -> Result<(), SimError> {
        let registered = lock(&self.shared.oauth).users.get(&user_id).cloned();
        self.shared.apply(|w| {
            let mut dispatches = Vec::new();
            if !w.guild(guild_id)?.members.contains_key(&user_id) {
                let username = registered
                    .map(|u| u.username)
                    .or_else(|| w.any_member(user_id).map(|m| m.username.clone()))
                    .ok_or(SimError::UnknownUser(user_id))?;
                let member = NewMember {
                    user_id: Some(user_id),
                    username: Some(username),
                    ..NewMember::default()
                };
                dispatches = w.add_member(guild_id, member, Shared::now_ms())?.1;
            }
            let ((), more) = w.set_member_permissions(guild_id, user_id, permissions)?;
            dispatches.extend(more);
            Ok(((), dispatches))
        })
    }

    /// Makes every authorization code issued so far expired, as if its ten
    /// minutes had passed; returns how many were still live.
    pub fn expire_oauth_codes(&self) -> usize {
        lock(&self.shared.oauth).expire_codes()
    }

    /// Makes every access token issued so far expired; refresh tokens keep
    /// working. Returns how many were still live.
    pub fn expire_oauth_tokens(&self) -> usize {
        lock(&self.shared.oauth).expire_access_tokens()
    }

    pub fn create_interaction(
        &self,
        interaction: NewInteraction,
    ) -> Result<CreatedInteraction, SimError> {
        let application_id = self.shared.config.application_id;
        self.shared
            .apply(|w| w.create_interaction(interaction, application_id, Shared::now_ms()))
    }

    /// The application's global commands as registered through REST.
    pub fn application_commands(&self) -> Vec<serde_json::Value> {
        lock(&self.shared.world).application_commands.clone()
    }

    pub fn interaction(&self, id: InteractionId) -> Option<InteractionInfo> {
        lock(&self.shared.world).interaction_info(id)
    }

    pub fn interactions(&self) -> Vec<InteractionInfo> {
        let world = lock(&self.shared.world);
        let mut ids: Vec<InteractionId> = world.interactions.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| world.interaction_info(id))
            .collect()
    }

    /// Queues `fault` for each of the next `count` interaction callbacks.
    pub fn fault_callbacks(&self, fault: CallbackFault, count: usize) {
        lock(&self.shared.callbacks)
            .queued
            .extend(std::iter::repeat_n(fault, count));
    }

    /// Interaction callbacks held by [`CallbackFault::Hold`] right now.
    pub fn held_callbacks(&self) -> usize {
        lock(&self.shared.callbacks).held
    }

    /// Lets every held interaction callback go on (it is then taken as
    /// usual); returns how many were held.
    pub fn release_callbacks(&self) -> usize {
        let held = self.held_callbacks();
        self.shared.callback_release.send_modify(|n| *n += 1);
        held
    }

    /// Waits until at least `count` interaction callbacks are held.
    pub async fn wait_for_held_callbacks(
        &self,
        count: usize,
        within: Duration,
    ) -> Result<(), SimError> {
        let deadline = Instant::now() + within;
        loop {
            let held = self.held_callbacks();
            if held >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "{count} held interaction callbacks ({held} so far)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Injects `fault` into every live connection of `shard_id`; returns how
    /// many connections it reached.
    pub fn fault(&self, shard_id: u32, fault: Fault) -> usize {
        self.shared.inject(shard_id, &fault)
    }

    /// Everything recorded about a shard: frames sent, connection history, counters.
    pub fn transcript(&self, shard_id: u32) -> ShardTranscript {
        lock(&self.shared.transcripts)
            .get(&shard_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn shards(&self) -> Vec<ShardStatus> {
        let mut by_shard: HashMap<u32, ShardStatus> = HashMap::new();
        let blank = |shard_id: u32, shard_count: u32| ShardStatus {
            shard_id,
            shard_count,
            connections: 0,
            sessions: 0,
            identifies: 0,
            resumes: 0,
            dispatches_sent: 0,
        };
        for session in self.shared.sessions.all() {
            if session.is_invalidated() {
                continue;
            }
            by_shard
                .entry(session.shard_id)
                .or_insert_with(|| blank(session.shard_id, session.shard_count))
                .sessions += 1;
        }
        for entry in lock(&self.shared.connections).values() {
            if let Some([id, count]) = entry.shard {
                by_shard
                    .entry(id)
                    .or_insert_with(|| blank(id, count))
                    .connections += 1;
            }
        }
        for (shard_id, transcript) in lock(&self.shared.transcripts).iter() {
            let status = by_shard
                .entry(*shard_id)
                .or_insert_with(|| blank(*shard_id, 0));
            status.identifies = transcript.identifies;
            status.resumes = transcript.resumes;
            status.dispatches_sent = transcript.dispatch_counts.values().sum();
        }
        let mut shards: Vec<ShardStatus> = by_shard.into_values().collect();
        shards.sort_by_key(|s| s.shard_id);
        shards
    }

    pub fn stats(&self) -> SimStats {
        let (guilds, members, interactions) = {
            let world = lock(&self.shared.world);
            (
                world.guilds.len(),
                world.guilds.values().map(|g| g.members.len()).sum(),
                world.interactions.len(),
            )
        };
        let (rest_rate_limited, rest_global_rate_limited) = {
            let rest = lock(&self.shared.rest);
            (rest.rejected, rest.rejected_global)
        };
        SimStats {
            guilds,
            members,
            interactions,
            connections: lock(&self.shared.connections).len(),
            sessions: self
                .shared
                .sessions
                .all()
                .iter()
                .filter(|s| !s.is_invalidated())
                .count(),
            identifies: lock(&self.shared.identify).total,
            rest_rate_limited,
            rest_global_rate_limited,
            role_requests: self.shared.role_requests.load(Ordering::Relaxed),
        }
    }

    /// Starts generating traffic in the background.
    pub fn start_traffic(&self, spec: TrafficSpec) -> TrafficRun {
        let progress = Arc::new(TrafficProgress::default());
        let id = {
            let mut runs = lock(&self.shared.traffic);
            let id = runs.len() as u64 + 1;
            runs.insert(id, Arc::clone(&progress));
            id
        };
        let task = tokio::spawn(traffic::run(
            Arc::clone(&self.shared),
            spec,
            Arc::clone(&progress),
        ));
        TrafficRun { id, progress, task }
    }

    /// `(emitted, requested, done)` of a traffic run started earlier.
    pub fn traffic_progress(&self, id: u64) -> Option<(u64, u64, bool)> {
        lock(&self.shared.traffic).get(&id).map(|p| {
            (
                p.emitted.load(Ordering::Relaxed),
                p.requested.load(Ordering::Relaxed),
                p.done.load(Ordering::Relaxed),
            )
        })
    }

    /// Waits until `count` distinct shards each have a live, identified connection.
    pub async fn wait_for_shards(&self, count: usize, within: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + within;
        loop {
            let connected = self
                .shards()
                .iter()
                .filter(|s| s.connections > 0 && s.sessions > 0)
                .count();
            if connected >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SimError::Timeout(format!(
                    "{count} connected shards ({connected} so far)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no connected session has undelivered dispatches.
    pub async fn wait_until_delivered(&self, within: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + within;
        while self.shared.sessions.max_lag() > 0 {
            if Instant::now() >= deadline {
                return Err(SimError::Timeout("delivery of pending dispatches".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
