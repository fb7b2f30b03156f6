//! Twilight dispatch events → `wire` envelopes.
//!
//! Only the dispatches named in `docs/wire.md` become envelopes; everything
//! else (READY, RESUMED, typing, presences, …) returns `None`. The envelope id
//! comes from (shard, session, sequence), so a replayed dispatch yields the
//! same id.
//!
//! Member dispatches — nearly all of a busy gateway's traffic — take a
//! shorter road ([`parse_member_dispatch`]): their `d` is read straight into
//! the fields the envelope carries, skipping Twilight's full model (whose
//! GUILD_MEMBER_ADD goes through serde's `flatten`, buffering every field),
//! which was the largest single cost per event in `gatehouse bench gateway`.
//! Everything else, and any member dispatch that road cannot read, goes
//! through Twilight.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use twilight_gateway::EventTypeFlags;
use twilight_model::application::interaction::application_command::{
    CommandDataOption, CommandOptionValue,
};
use twilight_model::application::interaction::{Interaction, InteractionData, InteractionType};
use twilight_model::gateway::event::DispatchEvent;
use twilight_model::gateway::payload::incoming::GuildCreate;
use twilight_model::guild::Member;
use twilight_model::id::{marker, Id as TwilightId};
use twilight_model::util::Timestamp;
use wire::payload::{
    ChunkMember, CommandOption, GuildJoin, GuildLeave, GuildUnavailable, InteractionCreate,
    InteractionKind, MemberJoin, MemberLeave, MemberUpdate, MembersChunk,
};
use wire::{Envelope, Payload};

/// The dispatches the gateway asks Twilight to deserialize: the ones that
/// become envelopes, plus READY and RESUMED for session bookkeeping.
pub const WANTED: EventTypeFlags = EventTypeFlags::GUILD_CREATE
    .union(EventTypeFlags::GUILD_DELETE)
    .union(EventTypeFlags::MEMBER_ADD)
    .union(EventTypeFlags::MEMBER_REMOVE)
    .union(EventTypeFlags::MEMBER_UPDATE)
    .union(EventTypeFlags::MEMBER_CHUNK)
    .union(EventTypeFlags::INTERACTION_CREATE)
    .union(EventTypeFlags::READY)
    .union(EventTypeFlags::RESUMED);

/// Where a dispatch came from.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub shard_id: u32,
    pub session_id: &'a str,
    pub sequence: u64,
    /// Unix ms when the gateway received it.
    pub received_at: i64,
}

/// The envelope for `event`, or `None` if the contract has no type for it.
pub fn to_envelope(origin: Origin<'_>, event: DispatchEvent) -> Option<Envelope> {
    let envelope = |payload| {
        Envelope::for_dispatch(
            origin.shard_id,
            origin.session_id,
            origin.sequence,
            origin.received_at,
            payload,
        )
    };
    Some(match event {
        DispatchEvent::GuildCreate(create) => match *create {
            GuildCreate::Available(guild) => envelope(Payload::GuildJoin(GuildJoin {
                name: guild.name,
                member_count: guild.member_count,
                owner_id: Some(guild.owner_id.to_wire()),
            }))
            .with_guild(guild.id.to_wire()),
            // Discord only sends unavailable guilds in READY and GUILD_DELETE;
            // an unavailable GUILD_CREATE carries nothing to publish.
            GuildCreate::Unavailable(_) => return None,
        },
        DispatchEvent::GuildDelete(delete) => {
            // `unavailable: true` is an outage, anything else means the bot
            // was removed (docs/wire.md).
            let payload = if delete.unavailable == Some(true) {
                Payload::GuildUnavailable(GuildUnavailable {})
            } else {
                Payload::GuildLeave(GuildLeave {})
            };
            envelope(payload).with_guild(delete.id.to_wire())
        }
        DispatchEvent::MemberAdd(add) => {
            let user = add.member.user.id.to_wire();
            envelope(Payload::MemberJoin(member_join(add.member)))
                .with_guild(add.guild_id.to_wire())
                .with_user(user)
        }
        DispatchEvent::MemberRemove(remove) => envelope(Payload::MemberLeave(MemberLeave {
            username: remove.user.name,
        }))
        .with_guild(remove.guild_id.to_wire())
        .with_user(remove.user.id.to_wire()),
        DispatchEvent::MemberUpdate(update) => {
            let update = *update;
            envelope(Payload::MemberUpdate(MemberUpdate {
                username: update.user.name,
                nick: update.nick,
                roles: update.roles.iter().map(|r| r.to_wire()).collect(),
                pending: update.pending,
            }))
            .with_guild(update.guild_id.to_wire())
            .with_user(update.user.id.to_wire())
        }
        DispatchEvent::MemberChunk(chunk) => envelope(Payload::MembersChunk(MembersChunk {
            members: chunk
                .members
                .into_iter()
                .map(|member| ChunkMember {
                    user_id: member.user.id.to_wire(),
                    member: member_join(member),
                })
                .collect(),
            chunk_index: chunk.chunk_index,
            chunk_count: chunk.chunk_count,
            nonce: chunk.nonce,
        }))
        .with_guild(chunk.guild_id.to_wire()),
        DispatchEvent::InteractionCreate(create) => interaction(origin, create.0),
        _ => return None,
    })
}

/// A member dispatch, read by [`parse_member_dispatch`].
#[derive(Debug)]
pub enum MemberDispatch {
    Add(MemberAddData),
    Remove(MemberRemoveData),
    Update(MemberUpdateData),
}

/// A user as the envelopes carry it. The fields Twilight's `User` requires
/// are required here too (their values unread), so that a dispatch Twilight
/// would refuse is refused on this road as well rather than published.
#[derive(Debug, Deserialize)]
pub struct UserData {
    id: TwilightId<marker::UserMarker>,
    username: String,
    global_name: Option<String>,
    #[serde(default)]
    bot: bool,
    #[serde(rename = "discriminator")]
    _discriminator: IgnoredAny,
}

/// GUILD_MEMBER_ADD's `d`: Twilight's `MemberAdd` (a guild id and a
/// `Member`), its required fields required.
#[derive(Debug, Deserialize)]
pub struct MemberAddData {
    guild_id: TwilightId<marker::GuildMarker>,
    user: UserData,
    nick: Option<String>,
    roles: Vec<TwilightId<marker::RoleMarker>>,
    #[serde(default)]
    pending: bool,
    joined_at: Option<Timestamp>,
    #[serde(rename = "deaf")]
    _deaf: IgnoredAny,
    #[serde(rename = "mute")]
    _mute: IgnoredAny,
    #[serde(rename = "flags")]
    _flags: IgnoredAny,
}

/// GUILD_MEMBER_REMOVE's `d`.
#[derive(Debug, Deserialize)]
pub struct MemberRemoveData {
    guild_id: TwilightId<marker::GuildMarker>,
    user: UserData,
}

/// GUILD_MEMBER_UPDATE's `d`.
#[derive(Debug, Deserialize)]
pub struct MemberUpdateData {
    guild_id: TwilightId<marker::GuildMarker>,
    user: UserData,
    nick: Option<String>,
    roles: Vec<TwilightId<marker::RoleMarker>>,
    #[serde(default)]
    pending: bool,
}

/// The sequence and contents of a member dispatch (GUILD_MEMBER_ADD,
/// _REMOVE, _UPDATE), or `None` for any other message and for a member
/// dispatch this road cannot read: the caller hands those to Twilight, which
/// decides as it always has (an envelope, or a skipped unreadable dispatch).
pub fn parse_member_dispatch(text: &str) -> Option<(u64, MemberDispatch)> {
    serde_json::from_str::<MemberFrame>(text)
        .ok()
        .map(|frame| (frame.sequence, frame.dispatch))
}

/// A member dispatch frame, read in one pass. `op`, `s` and `t` are read as
/// JSON keys of the frame (not found by searching the text first, which
/// cost a second scan of every event), and a `t` that names anything else
/// ends the read at once: a GUILD_CREATE is not parsed twice. Discord sends
/// `t` before `d`, so `d` is read straight into its type; a `d` that comes
/// first is kept as raw JSON and read once `t` is known.
struct MemberFrame {
    sequence: u64,
    dispatch: MemberDispatch,
}

#[derive(Clone, Copy)]
enum MemberKind {
    Add,
    Remove,
    Update,
}

impl MemberKind {
    fn of(event_type: &str) -> Option<Self> {
        match event_type {
            "GUILD_MEMBER_ADD" => Some(Self::Add),
            "GUILD_MEMBER_REMOVE" => Some(Self::Remove),
            "GUILD_MEMBER_UPDATE" => Some(Self::Update),
            _ => None,
        }
    }
}

/// The kind reads its `d`.
impl<'de> DeserializeSeed<'de> for MemberKind {
    type Value = MemberDispatch;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MemberDispatch, D::Error> {
        Ok(match self {
            Self::Add => MemberDispatch::Add(MemberAddData::deserialize(d)?),
            Self::Remove => MemberDispatch::Remove(MemberRemoveData::deserialize(d)?),
            Self::Update => MemberDispatch::Update(MemberUpdateData::deserialize(d)?),
        })
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum FrameKey {
    Op,
    S,
    T,
    D,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for MemberFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MemberFrameVisitor)
    }
}

struct MemberFrameVisitor;

impl<'de> Visitor<'de> for MemberFrameVisitor {
    type Value = MemberFrame;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a gateway frame carrying a member dispatch")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MemberFrame, A::Error> {
        let (mut op, mut sequence, mut kind) = (None::<u8>, None::<u64>, None);
        let (mut data, mut raw) = (None, None::<&'de RawValue>);
        while let Some(key) = map.next_key()? {
            match key {
                FrameKey::Op => op = map.next_value()?,
                FrameKey::S => sequence = map.next_value()?,
                FrameKey::T => {
                    // Borrowed: an event name has no escapes, and one that
                    // does is not a member dispatch.
                    let event_type: Option<&'de str> = map.next_value()?;
                    kind = event_type.and_then(MemberKind::of);
                    if kind.is_none() {
                        return Err(de::Error::custom("not a member dispatch"));
                    }
                }
                FrameKey::D => match kind {
                    Some(kind) => data = Some(map.next_value_seed(kind)?),
                    None => raw = Some(map.next_value()?),
                },
                FrameKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(0), Some(sequence), Some(kind)) = (op, sequence, kind) else {
            return Err(de::Error::custom("not a member dispatch"));
        };
        let dispatch = match (data, raw) {
            (Some(dispatch), _) => dispatch,
            (None, Some(raw)) => kind
                .deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                .map_err(de::Error::custom)?,
            (None, None) => return Err(de::Error::missing_field("d")),
        };
        Ok(MemberFrame { sequence, dispatch })
    }
}

/// The envelope for a member dispatch: the same envelope [`to_envelope`]
/// builds from Twilight's model of it.
pub fn member_envelope(origin: Origin<'_>, event: MemberDispatch) -> Envelope {
    let envelope = |payload| {
        Envelope::for_dispatch(
            origin.shard_id,
            origin.session_id,
            origin.sequence,
            origin.received_at,
            payload,
        )
    };
    match event {
        MemberDispatch::Add(add) => envelope(Payload::MemberJoin(MemberJoin {
            username: add.user.username,
            global_name: add.user.global_name,
            bot: add.user.bot,
            nick: add.nick,
            roles: roles(add.roles),
            pending: add.pending,
            joined_at: add.joined_at.map(unix_ms),
        }))
        .with_guild(add.guild_id.to_wire())
        .with_user(add.user.id.to_wire()),
        MemberDispatch::Remove(remove) => envelope(Payload::MemberLeave(MemberLeave {
            username: remove.user.username,
        }))
        .with_guild(remove.guild_id.to_wire())
        .with_user(remove.user.id.to_wire()),
        MemberDispatch::Update(update) => envelope(Payload::MemberUpdate(MemberUpdate {
            username: update.user.username,
            nick: update.nick,
            roles: roles(update.roles),
            pending: update.pending,
        }))
        .with_guild(update.guild_id.to_wire())
        .with_user(update.user.id.to_wire()),
    }
}

fn roles(roles: Vec<TwilightId<marker::RoleMarker>>) -> Vec<wire::RoleId> {
    roles.into_iter().map(ToWire::to_wire).collect()
}

/// A member's state as a join (and a chunk of the member list) carries it.
fn member_join(member: Member) -> MemberJoin {
    MemberJoin {
        username: member.user.name,
        global_name: member.user.global_name,
        bot: member.user.bot,
        nick: member.nick,
        roles: member.roles.iter().map(|r| r.to_wire()).collect(),
        pending: member.pending,
        joined_at: member.joined_at.map(unix_ms),
    }
}

fn interaction(origin: Origin<'_>, i: Interaction) -> Envelope {
    let user_id = i.author_id().map(ToWire::to_wire);
    #[allow(deprecated)] // `channel_id` is still sent by older payloads.
    let channel_id = i.channel.as_ref().map(|c| c.id).or(i.channel_id);
    let kind = match i.kind {
        InteractionType::Ping => InteractionKind::Ping,
        InteractionType::ApplicationCommand => InteractionKind::ApplicationCommand,
        InteractionType::MessageComponent => InteractionKind::MessageComponent,
        InteractionType::ApplicationCommandAutocomplete => {
            InteractionKind::ApplicationCommandAutocomplete
        }
        InteractionType::ModalSubmit => InteractionKind::ModalSubmit,
        _ => InteractionKind::Unknown,
    };
    let (command_id, command_name, options) = match i.data {
        Some(InteractionData::ApplicationCommand(data)) => (
            Some(data.id.to_wire()),
            Some(data.name),
            data.options.into_iter().map(option).collect(),
        ),
        _ => (None, None, Vec::new()),
    };
    let mut envelope = Envelope::for_dispatch(
        origin.shard_id,
        origin.session_id,
        origin.sequence,
        origin.received_at,
        Payload::InteractionCreate(InteractionCreate {
            interaction_id: i.id.to_wire(),
            token: i.token,
            application_id: i.application_id.to_wire(),
            kind,
            command_id,
            command_name,
            options,
            locale: i.locale,
            guild_locale: i.guild_locale,
        }),
    );
    envelope.guild_id = i.guild_id.map(ToWire::to_wire);
    envelope.user_id = user_id;
    envelope.channel_id = channel_id.map(ToWire::to_wire);
    envelope
}

/// Twilight's id of a kind → the wire's id of the same kind. A trait rather
/// than one generic function so that a guild id cannot become a user id on
/// the way.
trait ToWire {
    type Wire;
    fn to_wire(self) -> Self::Wire;
}

macro_rules! to_wire {
    ($($twilight:ident => $wire:ty),* $(,)?) => {$(
        impl ToWire for TwilightId<marker::$twilight> {
            type Wire = $wire;
            fn to_wire(self) -> $wire {
                <$wire>::from_nonzero(self.into_nonzero())
            }
        }
    )*};
}

to_wire! {
    GuildMarker => wire::GuildId,
    UserMarker => wire::UserId,
    RoleMarker => wire::RoleId,
    ChannelMarker => wire::ChannelId,
    ApplicationMarker => wire::ApplicationId,
    InteractionMarker => wire::InteractionId,
    CommandMarker => wire::CommandId,
}

fn option(o: CommandDataOption) -> CommandOption {
    use serde_json::Value;
    let id = |v: u64| Value::String(v.to_string());
    let (value, options) = match o.value {
        CommandOptionValue::Attachment(v) => (id(v.get()), Vec::new()),
        CommandOptionValue::Boolean(v) => (Value::Bool(v), Vec::new()),
        CommandOptionValue::Channel(v) => (id(v.get()), Vec::new()),
        CommandOptionValue::Focused(v, _) => (Value::String(v), Vec::new()),
        CommandOptionValue::Integer(v) => (Value::from(v), Vec::new()),
        CommandOptionValue::Mentionable(v) => (id(v.get()), Vec::new()),
        CommandOptionValue::Number(v) => (
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
            Vec::new(),
        ),
        CommandOptionValue::Role(v) => (id(v.get()), Vec::new()),
        CommandOptionValue::String(v) => (Value::String(v), Vec::new()),
        CommandOptionValue::SubCommand(nested) | CommandOptionValue::SubCommandGroup(nested) => {
            (Value::Null, nested.into_iter().map(option).collect())
        }
        CommandOptionValue::User(v) => (id(v.get()), Vec::new()),
    };
    CommandOption {
        name: o.name,
        value,
        options,
    }
}

fn unix_ms(t: Timestamp) -> i64 {
    t.as_micros() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use twilight_model::gateway::event::GatewayEvent;
    use wire::{ChannelId, EventType, GuildId, RoleId, UserId};

    const ORIGIN: Origin<'static> = Origin {
        shard_id: 1,
        session_id: "s1",
        sequence: 7,
        received_at: 1_700_000_000_000,
    };

    /// Parses a dispatch frame the way the shard runner does.
    fn dispatch(t: &str, d: serde_json::Value) -> DispatchEvent {
        let frame = serde_json::json!({"op": 0, "s": 7, "t": t, "d": d}).to_string();
        match twilight_gateway::parse(frame, WANTED) {
            Ok(Some(GatewayEvent::Dispatch(7, event))) => event,
            other => panic!("unexpected parse result {other:?}"),
        }
    }

    fn user(id: &str, name: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "username": name, "discriminator": "0", "avatar": null,
            "global_name": "Display", "bot": false})
    }

    #[test]
    fn guild_delete_is_a_leave_unless_unavailable() {
        let leave = to_envelope(
            ORIGIN,
            dispatch("GUILD_DELETE", serde_json::json!({"id": "41"})),
        )
        .unwrap();
        assert_eq!(leave.event_type(), Some(EventType::GuildLeave));
        assert_eq!(leave.guild_id, GuildId::new(41));
        let outage = to_envelope(
            ORIGIN,
            dispatch(
                "GUILD_DELETE",
                serde_json::json!({"id": "41", "unavailable": true}),
            ),
        )
        .unwrap();
        assert_eq!(outage.event_type(), Some(EventType::GuildUnavailable));
        assert_eq!(outage.subject(), Some(wire::subjects::GUILD_UNAVAILABLE));
    }

    #[test]
    fn member_add_carries_the_member_and_a_deterministic_id() {
        let d = serde_json::json!({
            "guild_id": "41", "user": user("77", "alice"), "nick": "Al",
            "roles": ["5", "6"], "joined_at": "2026-01-01T00:00:00.000000+00:00",
            "deaf": false, "mute": false, "pending": true, "flags": 0
        });
        let env = to_envelope(ORIGIN, dispatch("GUILD_MEMBER_ADD", d)).unwrap();
        assert_eq!(env.id, wire::EventId::for_dispatch(1, "s1", 7));
        assert_eq!(env.user_id, UserId::new(77));
        assert_eq!(env.occurred_at, ORIGIN.received_at);
        let Payload::MemberJoin(join) = env.payload else {
            panic!("not a member.join")
        };
        assert_eq!(join.username, "alice");
        assert_eq!(join.global_name.as_deref(), Some("Display"));
        assert_eq!(join.roles, [5, 6].map(|r| RoleId::new(r).unwrap()));
        assert!(join.pending);
        assert_eq!(join.joined_at, Some(1_767_225_600_000));
    }

    #[test]
    fn a_member_chunk_lists_each_member_with_their_state_and_its_place_in_the_answer() {
        let member = |id: &str, name: &str, roles: serde_json::Value| {
            serde_json::json!({
                "user": user(id, name), "nick": null, "roles": roles,
                "joined_at": "2026-01-01T00:00:00.000000+00:00",
                "deaf": false, "mute": false, "pending": false, "flags": 0
            })
        };
        let d = serde_json::json!({
            "guild_id": "41", "chunk_index": 1, "chunk_count": 3, "nonce": "n1",
            "members": [member("77", "alice", serde_json::json!(["5"])),
                        member("78", "bob", serde_json::json!([]))],
            "not_found": []
        });
        let env = to_envelope(ORIGIN, dispatch("GUILD_MEMBERS_CHUNK", d)).unwrap();
        assert_eq!(env.subject(), Some("events.member.chunk"));
        assert_eq!(env.guild_id, GuildId::new(41));
        assert_eq!(env.user_id, None);
        let Payload::MembersChunk(chunk) = env.payload else {
            panic!("not a member.chunk")
        };
        assert_eq!(
            (chunk.chunk_index, chunk.chunk_count, chunk.nonce.as_deref()),
            (1, 3, Some("n1"))
        );
        let users: Vec<_> = chunk.members.iter().map(|m| m.user_id.get()).collect();
        assert_eq!(users, [77, 78]);
        assert_eq!(chunk.members[0].member.username, "alice");
        assert_eq!(chunk.members[0].member.roles, [RoleId::new(5).unwrap()]);
        assert_eq!(chunk.members[1].member.joined_at, Some(1_767_225_600_000));
    }

    #[test]
    fn member_remove_and_update() {
        let remove = to_envelope(
            ORIGIN,
            dispatch(
                "GUILD_MEMBER_REMOVE",
                serde_json::json!({"guild_id": "41", "user": user("77", "alice")}),
            ),
        )
        .unwrap();
        assert_eq!(remove.event_type(), Some(EventType::MemberLeave));
        let update = to_envelope(
            ORIGIN,
            dispatch(
                "GUILD_MEMBER_UPDATE",
                serde_json::json!({"guild_id": "41", "user": user("77", "alice"),
                    "roles": ["9"], "nick": null, "joined_at": null, "pending": false}),
            ),
        )
        .unwrap();
        let Payload::MemberUpdate(u) = update.payload else {
            panic!("not a member.update")
        };
        assert_eq!(u.roles, [RoleId::new(9).unwrap()]);
        assert_eq!(u.nick, None);
    }

    #[test]
    fn interactions_keep_command_options_and_routing_fields() {
        let d = serde_json::json!({
            "id": "900", "application_id": "800", "type": 2, "token": "itoken",
            "guild_id": "41", "channel": {"id": "33", "type": 0},
            "member": {"user": user("77", "alice"), "roles": [], "joined_at": null,
                "deaf": false, "mute": false, "flags": 0, "permissions": "0"},
            "locale": "de", "guild_locale": "en-US", "version": 1,
            "entitlements": [], "authorizing_integration_owners": {},
            "attachment_size_limit": 0,
            "data": {"id": "700", "name": "verify", "type": 1, "options": [
                {"name": "chain", "type": 4, "value": 1},
                {"name": "sub", "type": 1, "options": [{"name": "who", "type": 6, "value": "55"}]}
            ]}
        });
        let env = to_envelope(ORIGIN, dispatch("INTERACTION_CREATE", d)).unwrap();
        assert_eq!(env.subject(), Some(wire::subjects::INTERACTION));
        assert_eq!(env.guild_id, GuildId::new(41));
        assert_eq!(env.user_id, UserId::new(77));
        assert_eq!(env.channel_id, ChannelId::new(33));
        let Payload::InteractionCreate(i) = env.payload else {
            panic!("not an interaction")
        };
        assert_eq!(i.command_name.as_deref(), Some("verify"));
        assert_eq!(i.options[0].value, serde_json::json!(1));
        assert_eq!(i.options[1].value, serde_json::Value::Null);
        assert_eq!(i.options[1].options[0].value, serde_json::json!("55"));
        assert_eq!(i.locale.as_deref(), Some("de"));
        assert_eq!(i.kind, InteractionKind::ApplicationCommand);
    }

    /// What the shard runner publishes for `frame` through the member road,
    /// and through Twilight.
    fn both_roads(frame: &str) -> (Envelope, Envelope) {
        let (sequence, member) = parse_member_dispatch(frame).expect("the member road reads it");
        assert_eq!(sequence, ORIGIN.sequence);
        let fast = member_envelope(ORIGIN, member);
        let Ok(Some(GatewayEvent::Dispatch(7, event))) =
            twilight_gateway::parse(frame.to_owned(), WANTED)
        else {
            panic!("Twilight cannot read {frame}")
        };
        (fast, to_envelope(ORIGIN, event).expect("an envelope"))
    }

    /// A dispatch frame with its keys in Discord's order (`t` before `d`).
    fn frame(t: &str, d: &serde_json::Value) -> String {
        format!(r#"{{"t":"{t}","s":7,"op":0,"d":{d}}}"#)
    }

    /// The same frame with `d` first: JSON does not promise key order.
    fn frame_data_first(t: &str, d: &serde_json::Value) -> String {
        format!(r#"{{"d":{d},"op":0,"s":7,"t":"{t}"}}"#)
    }

    #[test]
    fn the_member_road_builds_the_envelopes_twilight_does() {
        let member = serde_json::json!({
            "guild_id": "41", "user": user("77", "al\"ice é"), "nick": "Al",
            "roles": ["5", "6"], "joined_at": "2026-01-01T00:00:00.000000+00:00",
            "deaf": false, "mute": false, "pending": true, "flags": 0,
            "avatar": null, "communication_disabled_until": null, "premium_since": null
        });
        let bare_user = serde_json::json!({"id": "78", "username": "bob",
            "discriminator": "0", "avatar": null});
        let frames = [
            frame("GUILD_MEMBER_ADD", &member),
            frame(
                "GUILD_MEMBER_ADD",
                &serde_json::json!({"guild_id": "41", "user": bare_user, "nick": null,
                    "roles": [], "joined_at": null, "deaf": true, "mute": false, "flags": 2}),
            ),
            frame(
                "GUILD_MEMBER_REMOVE",
                &serde_json::json!({"guild_id": "41", "user": user("77", "alice")}),
            ),
            frame("GUILD_MEMBER_UPDATE", &member),
            frame(
                "GUILD_MEMBER_UPDATE",
                &serde_json::json!({"guild_id": "41", "user": bare_user, "roles": ["9"],
                    "nick": null, "joined_at": null}),
            ),
            // Keys in another order, `t` last, and numeric ids.
            r#"{"d":{"user":{"username":"c","id":79,"discriminator":"0001","bot":true},"roles":[10],"guild_id":41},"s":7,"op":0,"t":"GUILD_MEMBER_UPDATE"}"#.to_owned(),
        ];
        let reordered = frames
            .iter()
            .map(|text| {
                let value: serde_json::Value = serde_json::from_str(text).expect("a frame");
                frame_data_first(value["t"].as_str().expect("a type"), &value["d"])
            })
            .collect::<Vec<_>>();
        for frame in frames.iter().chain(&reordered) {
            let (fast, twilight) = both_roads(frame);
            assert_eq!(fast, twilight, "{frame}");
            assert_eq!(
                fast.to_json().unwrap(),
                twilight.to_json().unwrap(),
                "{frame}"
            );
        }
    }

    #[test]
    fn the_member_road_leaves_everything_else_to_twilight() {
        let no_discriminator = frame(
            "GUILD_MEMBER_REMOVE",
            &serde_json::json!({"guild_id": "41", "user": {"id": "77", "username": "a"}}),
        );
        let no_deaf = frame(
            "GUILD_MEMBER_ADD",
            &serde_json::json!({"guild_id": "41", "user": user("77", "a"), "roles": [],
                "joined_at": null, "mute": false, "flags": 0}),
        );
        let bad_role = frame(
            "GUILD_MEMBER_UPDATE",
            &serde_json::json!({"guild_id": "41", "user": user("77", "a"), "roles": ["x"]}),
        );
        let delete = frame("GUILD_DELETE", &serde_json::json!({"id": "41"}));
        // A member's fields inside another dispatch's `d` (a `t` key among
        // them) do not make it a member dispatch, in either order.
        let inner = serde_json::json!({"t": "GUILD_MEMBER_ADD", "guild_id": "41",
            "user": user("77", "a"), "roles": [], "joined_at": null,
            "deaf": false, "mute": false, "flags": 0});
        let other_with_member_inside = frame("GUILD_DELETE", &inner);
        let other_with_member_inside_first = frame_data_first("GUILD_DELETE", &inner);
        let not_dispatch = r#"{"op":11,"s":null,"t":"GUILD_MEMBER_ADD","d":null}"#;
        let no_sequence = r#"{"t":"GUILD_MEMBER_REMOVE","s":null,"op":0,"d":{"guild_id":"41","user":{"id":"77","username":"a","discriminator":"0"}}}"#;
        let no_data = r#"{"t":"GUILD_MEMBER_REMOVE","s":7,"op":0}"#;
        for text in [
            &no_discriminator,
            &no_deaf,
            &bad_role,
            &delete,
            &other_with_member_inside,
            &other_with_member_inside_first,
            not_dispatch,
            no_sequence,
            no_data,
        ] {
            assert!(parse_member_dispatch(text).is_none(), "{text}");
        }
        // Twilight refuses the unreadable ones too, so they are skipped as
        // before rather than published.
        for text in [&no_discriminator, &no_deaf, &bad_role] {
            assert!(
                twilight_gateway::parse(text.clone(), WANTED).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn other_dispatches_are_not_envelopes() {
        assert!(to_envelope(ORIGIN, DispatchEvent::Resumed).is_none());
    }
}
