//! Discord's JSON shapes, as twilight-model 0.18 reads them.
//!
//! twilight-model requires fields that older Discord docs omit (a role's
//! `colors`, a member's `flags`, an interaction's `attachment_size_limit`), so
//! every builder here is checked against twilight's types in the tests.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use wire::{ApplicationId, ChannelId, GuildId, MessageId, RoleId, UserId};

use crate::world::{GuildState, InteractionRecord, MemberState, RoleState};

/// Gateway opcodes.
pub(crate) mod op {
    pub const DISPATCH: u8 = 0;
    pub const HEARTBEAT: u8 = 1;
    pub const IDENTIFY: u8 = 2;
    pub const PRESENCE_UPDATE: u8 = 3;
    pub const VOICE_STATE_UPDATE: u8 = 4;
    pub const RESUME: u8 = 6;
    pub const RECONNECT: u8 = 7;
    pub const REQUEST_GUILD_MEMBERS: u8 = 8;
    pub const INVALID_SESSION: u8 = 9;
    pub const HELLO: u8 = 10;
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// A dispatch frame. `op`, `s` and `t` come before `d` because twilight
/// locates them by scanning the text, and a `d` containing those keys would
/// otherwise be found first.
pub(crate) fn dispatch_frame(seq: u64, event: &str, data: &str) -> String {
    format!(r#"{{"op":0,"s":{seq},"t":"{event}","d":{data}}}"#)
}

/// A non-dispatch frame (`s` and `t` are null).
pub(crate) fn op_frame(opcode: u8, data: &str) -> String {
    format!(r#"{{"op":{opcode},"s":null,"t":null,"d":{data}}}"#)
}

/// Discord's timestamp format, e.g. `2024-01-01T00:00:00.000000+00:00`.
pub(crate) fn timestamp(unix_ms: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(unix_ms).unwrap_or_default();
    at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Serialises one of the objects below. They have string keys and plain
/// fields only, so this cannot fail unless one of them changes.
fn to_json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or_else(|error| {
        tracing::error!(%error, "a simulated object does not serialise");
        Value::Null
    })
}

/// A user object. Users and members are structs rather than `json!` values
/// because member chunks serialise up to 100,000 of them at once, which
/// this does about three times faster in a debug build.
#[derive(Serialize)]
struct UserObject<'a> {
    id: UserId,
    username: &'a str,
    global_name: Option<&'a str>,
    discriminator: &'static str,
    avatar: Option<()>,
    avatar_decoration_data: Option<()>,
    banner: Option<()>,
    accent_color: Option<()>,
    bot: bool,
    public_flags: u8,
}

impl<'a> UserObject<'a> {
    fn new(id: UserId, username: &'a str, global_name: Option<&'a str>, bot: bool) -> Self {
        Self {
            id,
            username,
            global_name,
            discriminator: "0",
            avatar: None,
            avatar_decoration_data: None,
            banner: None,
            accent_color: None,
            bot,
            public_flags: 0,
        }
    }

    fn of(member: &'a MemberState) -> Self {
        Self::new(
            member.user_id,
            &member.username,
            member.global_name.as_deref(),
            member.bot,
        )
    }
}

pub(crate) fn user(id: UserId, username: &str, global_name: Option<&str>, bot: bool) -> Value {
    to_json(&UserObject::new(id, username, global_name, bot))
}

pub(crate) fn member_user(member: &MemberState) -> Value {
    to_json(&UserObject::of(member))
}

pub(crate) fn role(role: &RoleState) -> Value {
    json!({
        "id": role.id.to_string(),
        "name": role.name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": role.position,
        "permissions": role.permissions.to_string(),
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

fn role_ids(member: &MemberState) -> Vec<String> {
    member.roles.iter().map(RoleId::to_string).collect()
}

/// A guild member object, as GUILD_CREATE lists and member chunks carry it.
#[derive(Serialize)]
struct MemberObject<'a> {
    user: UserObject<'a>,
    nick: Option<&'a str>,
    avatar: Option<()>,
    banner: Option<()>,
    roles: &'a BTreeSet<RoleId>,
    joined_at: String,
    premium_since: Option<()>,
    deaf: bool,
    mute: bool,
    flags: u8,
    pending: bool,
    communication_disabled_until: Option<()>,
}

impl<'a> MemberObject<'a> {
    fn of(member: &'a MemberState) -> Self {
        Self {
            user: UserObject::of(member),
            nick: member.nick.as_deref(),
            avatar: None,
            banner: None,
            roles: &member.roles,
            joined_at: timestamp(member.joined_at_ms),
            premium_since: None,
            deaf: false,
            mute: false,
            flags: 0,
            pending: member.pending,
            communication_disabled_until: None,
        }
    }
}

pub(crate) fn member(member: &MemberState) -> Value {
    to_json(&MemberObject::of(member))
}

/// GUILD_MEMBER_ADD: a member with `guild_id` beside its fields.
pub(crate) fn member_add(guild_id: GuildId, state: &MemberState) -> Value {
    let mut value = member(state);
    value["guild_id"] = Value::String(guild_id.to_string());
    value
}

pub(crate) fn member_update(guild_id: GuildId, member: &MemberState) -> Value {
    json!({
        "guild_id": guild_id.to_string(),
        "user": member_user(member),
        "nick": member.nick,
        "avatar": null,
        "roles": role_ids(member),
        "joined_at": timestamp(member.joined_at_ms),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": member.pending,
        "communication_disabled_until": null,
    })
}

pub(crate) fn member_remove(guild_id: GuildId, member: &MemberState) -> Value {
    json!({"guild_id": guild_id.to_string(), "user": member_user(member)})
}

/// Where one GUILD_MEMBERS_CHUNK sits in its answer, and what every chunk
/// of the answer repeats.
pub(crate) struct ChunkInfo<'a> {
    pub guild_id: GuildId,
    pub chunk_index: u32,
    pub chunk_count: u32,
    /// Only for a request by `user_ids`: Discord then always sends the
    /// field, empty when every id was found.
    pub not_found: Option<&'a [UserId]>,
    pub nonce: Option<&'a str>,
    /// The request asked for presences and may have them. Nobody is online
    /// in the simulator, so the list is always empty.
    pub presences: bool,
}

#[derive(Serialize)]
struct ChunkObject<'a> {
    guild_id: GuildId,
    members: Vec<MemberObject<'a>>,
    chunk_index: u32,
    chunk_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_found: Option<&'a [UserId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presences: Option<[(); 0]>,
}

/// GUILD_MEMBERS_CHUNK's data, serialised. Members are the same objects
/// GUILD_CREATE lists.
pub(crate) fn members_chunk<'m>(
    info: &ChunkInfo<'_>,
    members: impl IntoIterator<Item = &'m MemberState>,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&ChunkObject {
        guild_id: info.guild_id,
        members: members.into_iter().map(MemberObject::of).collect(),
        chunk_index: info.chunk_index,
        chunk_count: info.chunk_count,
        not_found: info.not_found,
        nonce: info.nonce,
        presences: info.presences.then_some([]),
    })
}

/// RATE_LIMITED for a Request Guild Members (the only opcode Discord rate
/// limits this way). `retry_after` is in seconds, fractional.
pub(crate) fn members_rate_limited(
    guild_id: GuildId,
    nonce: Option<&str>,
    retry_after: std::time::Duration,
) -> Value {
    let mut meta = json!({"guild_id": guild_id.to_string()});
    if let Some(nonce) = nonce {
        meta["nonce"] = json!(nonce);
    }
    json!({
        "opcode": op::REQUEST_GUILD_MEMBERS,
        "retry_after": retry_after.as_secs_f64(),
        "meta": meta,
    })
}

pub(crate) fn guild_delete(guild_id: GuildId, unavailable: bool) -> Value {
    if unavailable {
        json!({"id": guild_id.to_string(), "unavailable": true})
    } else {
        // Discord omits `unavailable` when the bot was removed.
        json!({"id": guild_id.to_string()})
    }
}

pub(crate) fn text_channel(guild_id: GuildId, channel_id: ChannelId) -> Value {
    json!({
        "id": channel_id.to_string(),
        "type": 0,
        "guild_id": guild_id.to_string(),
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": false,
        "topic": null,
        "last_message_id": null,
        "rate_limit_per_user": 0,
        "parent_id": null,
        "flags": 0,
    })
}

/// GUILD_CREATE for an available guild. Members are listed only up to
/// `large_threshold`, as Discord does; larger guilds say `large: true`.
pub(crate) fn guild_create(guild: &GuildState, large_threshold: u32, joined_at_ms: i64) -> Value {
    let large = guild.members.len() > large_threshold as usize;
    let members: Vec<Value> = if large {
        Vec::new()
    } else {
        guild.members.values().map(member).collect()
    };
    json!({
        "id": guild.id.to_string(),
        "name": guild.name,
        "icon": null,
        "splash": null,
        "discovery_splash": null,
        "banner": null,
        "description": null,
        "owner_id": guild.owner_id.to_string(),
        "afk_channel_id": null,
        "afk_timeout": 300,
        "application_id": null,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_progress_bar_enabled": false,
        "preferred_locale": guild.locale,
        "public_updates_channel_id": null,
        "rules_channel_id": null,
        "system_channel_id": null,
        "system_channel_flags": 0,
        "vanity_url_code": null,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": guild.roles.iter().map(role).collect::<Vec<_>>(),
        "joined_at": timestamp(joined_at_ms),
        "large": large,
        "unavailable": false,
        "member_count": guild.members.len(),
        "members": members,
        "channels": [text_channel(guild.id, guild.channel_id)],
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
    })
}

/// INTERACTION_CREATE for a slash command invoked in a guild.
pub(crate) fn interaction(
    record: &InteractionRecord,
    guild: &GuildState,
    member_state: &MemberState,
    application_id: ApplicationId,
) -> Value {
    let mut invoker = member(member_state);
    if let Some(fields) = invoker.as_object_mut() {
        fields.remove("pending");
        fields.insert(
            "permissions".into(),
            Value::String("2248473465835073".into()),
        );
    }
    json!({
        "id": record.id.to_string(),
        "application_id": application_id.to_string(),
        "type": 2,
        "token": record.token,
        "version": 1,
        "guild_id": guild.id.to_string(),
        "guild": {"id": guild.id.to_string(), "locale": guild.locale, "features": []},
        "guild_locale": guild.locale,
        "channel_id": guild.channel_id.to_string(),
        "channel": text_channel(guild.id, guild.channel_id),
        "member": invoker,
        "locale": record.locale,
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild.id.to_string()},
        "context": 0,
        "attachment_size_limit": 10_485_760,
        "data": {
            "id": record.command_id.to_string(),
            "name": record.command_name,
            "type": 1,
            "guild_id": guild.id.to_string(),
            "options": record.options,
        },
    })
}

pub(crate) struct ReadyInfo<'a> {
    pub session_id: &'a str,
    pub resume_gateway_url: &'a str,
    pub shard: [u32; 2],
    pub guild_ids: &'a [GuildId],
    pub bot_user_id: UserId,
    pub bot_username: &'a str,
    pub application_id: ApplicationId,
}

pub(crate) fn ready(info: &ReadyInfo<'_>) -> Value {
    let guilds: Vec<Value> = info
        .guild_ids
        .iter()
        .map(|id| json!({"id": id.to_string(), "unavailable": true}))
        .collect();
    json!({
        "v": 10,
        "user": {
            "id": info.bot_user_id.to_string(),
            "username": info.bot_username,
            "global_name": null,
            "discriminator": "0",
            "avatar": null,
            "banner": null,
            "accent_color": null,
            "bot": true,
            "mfa_enabled": false,
            "verified": true,
            "flags": 0,
        },
        "guilds": guilds,
        "session_id": info.session_id,
        "resume_gateway_url": info.resume_gateway_url,
        "shard": info.shard,
        "application": {"id": info.application_id.to_string(), "flags": 0},
        "private_channels": [],
        "relationships": [],
    })
}

/// The message object returned by the original-response endpoints.
pub(crate) fn message(
    id: MessageId,
    channel_id: ChannelId,
    application_id: ApplicationId,
    bot_username: &str,
    content: &Value,
    at_ms: i64,
) -> Value {
    let body = content.as_object();
    let field = |name: &str| body.and_then(|b| b.get(name)).cloned();
    json!({
        "id": id.to_string(),
        "type": 20,
        "channel_id": channel_id.to_string(),
        // The author of an interaction response is the application itself.
        "author": user(application_id.cast(), bot_username, None, true),
        "content": field("content").unwrap_or_else(|| Value::String(String::new())),
        "timestamp": timestamp(at_ms),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": field("embeds").unwrap_or_else(|| json!([])),
        "components": field("components").unwrap_or_else(|| json!([])),
        "pinned": false,
        "application_id": application_id.to_string(),
        "webhook_id": application_id.to_string(),
        "flags": field("flags").unwrap_or_else(|| json!(0)),
    })
}
