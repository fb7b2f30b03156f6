//! Typed `data` of each envelope type.
//!
//! Every struct reads with `#[serde(default)]` and without
//! `deny_unknown_fields`: v1 only ever adds fields, so an old reader must accept
//! a newer writer's output and a new reader must accept an older one's.

use serde::{Deserialize, Serialize};

use crate::{ApplicationId, CommandId, InteractionId, RoleId, UserId};

/// `guild.join`: a GUILD_CREATE for an available guild.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuildJoin {
    pub name: String,
    /// Discord only sends it on GUILD_CREATE; absent means unknown.
    pub member_count: Option<u64>,
    pub owner_id: Option<UserId>,
}

/// `guild.leave`: a GUILD_DELETE without `unavailable` — the bot was removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuildLeave {}

/// `guild.unavailable`: a GUILD_DELETE with `unavailable: true` — an outage.
/// Consumers must not treat it as a leave; the guild comes back with a
/// GUILD_CREATE (published as `guild.join`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuildUnavailable {}

/// `member.join`: GUILD_MEMBER_ADD.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberJoin {
    pub username: String,
    pub global_name: Option<String>,
    pub bot: bool,
    pub nick: Option<String>,
    pub roles: Vec<RoleId>,
    /// True while the member has not passed membership screening.
    pub pending: bool,
    /// Unix milliseconds.
    pub joined_at: Option<i64>,
}

/// `member.chunk`: one GUILD_MEMBERS_CHUNK, Discord's answer (in pieces of
/// up to 1,000) to the gateway's Request Guild Members. The members present
/// in the guild when the chunk was sent, in their full state; together the
/// chunks of one `nonce` are the whole member list, which is how a server
/// that adds the bot with members already in it gets synced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersChunk {
    pub members: Vec<ChunkMember>,
    /// 0-based; `chunk_count` chunks make up one answer.
    pub chunk_index: u32,
    pub chunk_count: u32,
    /// Echoed from the request: which sync this chunk belongs to.
    pub nonce: Option<String>,
}

/// A member as a chunk lists it: who, and their state as a join carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMember {
    pub user_id: UserId,
    #[serde(flatten)]
    pub member: MemberJoin,
}

/// `member.leave`: GUILD_MEMBER_REMOVE (left, kicked or banned — Discord does
/// not say which).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberLeave {
    pub username: String,
}

/// `member.update`: GUILD_MEMBER_UPDATE; the member's full current state, not a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberUpdate {
    pub username: String,
    pub nick: Option<String>,
    pub roles: Vec<RoleId>,
    pub pending: bool,
}

/// Discord's interaction types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    Ping,
    #[default]
    ApplicationCommand,
    MessageComponent,
    ApplicationCommandAutocomplete,
    ModalSubmit,
    /// A kind this reader does not know (written by a newer producer).
    #[serde(other)]
    Unknown,
}

/// One option of a command invocation; sub-commands nest their options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandOption {
    pub name: String,
    /// The value as Discord sent it (string, integer, number, boolean, or a
    /// snowflake string for user/channel/role/mentionable); `null` for
    /// sub-commands and groups.
    pub value: serde_json::Value,
    pub options: Vec<CommandOption>,
}

/// `interaction.create`: INTERACTION_CREATE. The invoking user, guild and
/// channel are the envelope's `user_id`, `guild_id` and `channel_id`.
///
/// Unlike the other payloads the two ids are required: v1 writers have always
/// sent them, and an interaction without them could not be answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractionCreate {
    pub interaction_id: InteractionId,
    /// Secret for 15 minutes: lets anyone answer the interaction. Never log it.
    #[serde(default)]
    pub token: String,
    pub application_id: ApplicationId,
    #[serde(default)]
    pub kind: InteractionKind,
    #[serde(default)]
    pub command_id: Option<CommandId>,
    #[serde(default)]
    pub command_name: Option<String>,
    #[serde(default)]
    pub options: Vec<CommandOption>,
    /// The invoking user's locale (e.g. `en-US`).
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub guild_locale: Option<String>,
}
