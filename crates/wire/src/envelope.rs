//! The envelope every gateway event travels in.

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::payload::{
    GuildJoin, GuildLeave, GuildUnavailable, InteractionCreate, MemberJoin, MemberLeave,
    MemberUpdate, MembersChunk,
};
use crate::{subjects, ChannelId, EventId, GuildId, UserId, WireError};

/// The contract version writers put in `version`. Within v1 changes are
/// additive only; a breaking change would be v2 on new subjects.
pub const VERSION: u32 = 1;

/// The envelope types of v1, with their names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    GuildJoin,
    GuildLeave,
    GuildUnavailable,
    MemberJoin,
    MemberLeave,
    MemberUpdate,
    MembersChunk,
    InteractionCreate,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::GuildJoin,
        EventType::GuildLeave,
        EventType::GuildUnavailable,
        EventType::MemberJoin,
        EventType::MemberLeave,
        EventType::MemberUpdate,
        EventType::MembersChunk,
        EventType::InteractionCreate,
    ];

    /// The value of the envelope's `type` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::GuildJoin => "guild.join",
            EventType::GuildLeave => "guild.leave",
            EventType::GuildUnavailable => "guild.unavailable",
            EventType::MemberJoin => "member.join",
            EventType::MemberLeave => "member.leave",
            EventType::MemberUpdate => "member.update",
            EventType::MembersChunk => "member.chunk",
            EventType::InteractionCreate => "interaction.create",
        }
    }

    /// The NATS subject envelopes of this type are published on.
    pub const fn subject(self) -> &'static str {
        match self {
            EventType::GuildJoin => subjects::GUILD_JOIN,
            EventType::GuildLeave => subjects::GUILD_LEAVE,
            EventType::GuildUnavailable => subjects::GUILD_UNAVAILABLE,
            EventType::MemberJoin => subjects::MEMBER_JOIN,
            EventType::MemberLeave => subjects::MEMBER_LEAVE,
            EventType::MemberUpdate => subjects::MEMBER_UPDATE,
            EventType::MembersChunk => subjects::MEMBER_CHUNK,
            EventType::InteractionCreate => subjects::INTERACTION,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The envelope's `data`, typed by the envelope's `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    GuildJoin(GuildJoin),
    GuildLeave(GuildLeave),
    GuildUnavailable(GuildUnavailable),
    MemberJoin(MemberJoin),
    MemberLeave(MemberLeave),
    MemberUpdate(MemberUpdate),
    MembersChunk(MembersChunk),
    InteractionCreate(InteractionCreate),
    /// A type this reader does not know, kept verbatim so it can be forwarded
    /// or dead-lettered without loss.
    Unknown {
        kind: String,
        data: serde_json::Value,
    },
}

impl Payload {
    pub fn event_type(&self) -> Option<EventType> {
        Some(match self {
            Payload::GuildJoin(_) => EventType::GuildJoin,
            Payload::GuildLeave(_) => EventType::GuildLeave,
            Payload::GuildUnavailable(_) => EventType::GuildUnavailable,
            Payload::MemberJoin(_) => EventType::MemberJoin,
            Payload::MemberLeave(_) => EventType::MemberLeave,
            Payload::MemberUpdate(_) => EventType::MemberUpdate,
            Payload::MembersChunk(_) => EventType::MembersChunk,
            Payload::InteractionCreate(_) => EventType::InteractionCreate,
            Payload::Unknown { .. } => return None,
        })
    }

    /// The value of the envelope's `type` field.
    pub fn kind(&self) -> &str {
        match self {
            Payload::Unknown { kind, .. } => kind,
            known => known.event_type().map_or("", EventType::as_str),
        }
    }

    fn from_parts(kind: String, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        let Some(event_type) = EventType::parse(&kind) else {
            return Ok(Payload::Unknown { kind, data });
        };
        // A writer may omit `data` for types without fields.
        let data = if data.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            data
        };
        Ok(match event_type {
            EventType::GuildJoin => Payload::GuildJoin(serde_json::from_value(data)?),
            EventType::GuildLeave => Payload::GuildLeave(serde_json::from_value(data)?),
            EventType::GuildUnavailable => Payload::GuildUnavailable(serde_json::from_value(data)?),
            EventType::MemberJoin => Payload::MemberJoin(serde_json::from_value(data)?),
            EventType::MemberLeave => Payload::MemberLeave(serde_json::from_value(data)?),
            EventType::MemberUpdate => Payload::MemberUpdate(serde_json::from_value(data)?),
            EventType::MembersChunk => Payload::MembersChunk(serde_json::from_value(data)?),
            EventType::InteractionCreate => {
                Payload::InteractionCreate(serde_json::from_value(data)?)
            }
        })
    }
}

/// One event on the wire. JSON field order is the declaration order of
/// `docs/wire.md`; readers must not depend on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Deterministic; see [`EventId::for_dispatch`].
    pub id: EventId,
    pub version: u32,
    pub shard_id: u32,
    /// Unix milliseconds when the gateway received the dispatch. A replayed
    /// dispatch has the same `id` but may have a later `occurred_at`.
    pub occurred_at: i64,
    pub guild_id: Option<GuildId>,
    pub user_id: Option<UserId>,
    pub channel_id: Option<ChannelId>,
    pub payload: Payload,
}

impl Envelope {
    /// An envelope for a gateway dispatch, with its deterministic id.
    pub fn for_dispatch(
        shard_id: u32,
        session_id: &str,
        sequence: u64,
        occurred_at: i64,
        payload: Payload,
    ) -> Self {
        Self {
            id: EventId::for_dispatch(shard_id, session_id, sequence),
            version: VERSION,
            shard_id,
            occurred_at,
            guild_id: None,
            user_id: None,
            channel_id: None,
            payload,
        }
    }

    pub fn with_guild(mut self, guild_id: GuildId) -> Self {
        self.guild_id = Some(guild_id);
        self
    }

    pub fn with_user(mut self, user_id: UserId) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn with_channel(mut self, channel_id: ChannelId) -> Self {
        self.channel_id = Some(channel_id);
        self
    }

    pub fn event_type(&self) -> Option<EventType> {
        self.payload.event_type()
    }

    /// The subject to publish on; `None` for a type this reader does not know.
    pub fn subject(&self) -> Option<&'static str> {
        self.event_type().map(EventType::subject)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(WireError::Encode)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, WireError> {
        serde_json::from_slice(bytes).map_err(WireError::Decode)
    }
}

struct DataRef<'a>(&'a Payload);

impl Serialize for DataRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Payload::GuildJoin(d) => d.serialize(serializer),
            Payload::GuildLeave(d) => d.serialize(serializer),
            Payload::GuildUnavailable(d) => d.serialize(serializer),
            Payload::MemberJoin(d) => d.serialize(serializer),
            Payload::MemberLeave(d) => d.serialize(serializer),
            Payload::MemberUpdate(d) => d.serialize(serializer),
            Payload::MembersChunk(d) => d.serialize(serializer),
            Payload::InteractionCreate(d) => d.serialize(serializer),
            Payload::Unknown { data, .. } => data.serialize(serializer),
        }
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Envelope", 9)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("type", self.payload.kind())?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("shard_id", &self.shard_id)?;
        s.serialize_field("occurred_at", &self.occurred_at)?;
        s.serialize_field("guild_id", &self.guild_id)?;
        s.serialize_field("user_id", &self.user_id)?;
        s.serialize_field("channel_id", &self.channel_id)?;
        s.serialize_field("data", &DataRef(&self.payload))?;
        s.end()
    }
}

#[derive(Deserialize)]
struct RawEnvelope {
    id: EventId,
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    shard_id: u32,
    occurred_at: i64,
    #[serde(default)]
    guild_id: Option<GuildId>,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    channel_id: Option<ChannelId>,
    #[serde(default)]
    data: serde_json::Value,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawEnvelope::deserialize(deserializer)?;
        let kind = raw.kind;
        let payload = Payload::from_parts(kind.clone(), raw.data)
            .map_err(|e| D::Error::custom(format!("data of {kind}: {e}")))?;
        Ok(Envelope {
            id: raw.id,
            version: raw.version,
            shard_id: raw.shard_id,
            occurred_at: raw.occurred_at,
            guild_id: raw.guild_id,
            user_id: raw.user_id,
            channel_id: raw.channel_id,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("member.joined"), None);
    }

    #[test]
    fn interactions_go_to_commands_and_the_rest_to_events() {
        for t in EventType::ALL {
            let stream = subjects::stream_for(t.subject()).map(|s| s.name);
            let expected = if t == EventType::InteractionCreate {
                "COMMANDS"
            } else {
                "EVENTS"
            };
            assert_eq!(stream, Some(expected), "{t:?}");
        }
    }

    #[test]
    fn unknown_type_is_kept_verbatim() {
        let json = br#"{"id":"x","type":"member.boost","version":1,"shard_id":0,
            "occurred_at":5,"guild_id":"1","user_id":null,"channel_id":null,
            "data":{"tier":2}}"#;
        let env = Envelope::from_json(json).unwrap();
        assert_eq!(env.subject(), None);
        assert_eq!(env.payload.kind(), "member.boost");
        let back: serde_json::Value = serde_json::from_slice(&env.to_json().unwrap()).unwrap();
        assert_eq!(back["type"], "member.boost");
        assert_eq!(back["data"]["tier"], 2);
    }

    #[test]
    fn known_type_with_wrong_data_is_an_error() {
        let json = br#"{"id":"x","type":"member.update","version":1,"shard_id":0,
            "occurred_at":5,"data":{"roles":"not-a-list"}}"#;
        let err = Envelope::from_json(json).unwrap_err();
        assert!(err.to_string().contains("member.update"), "{err}");
    }

    #[test]
    fn missing_data_reads_as_empty_for_fieldless_types() {
        let json = br#"{"id":"x","type":"guild.leave","version":1,"shard_id":0,
            "occurred_at":5,"guild_id":"9"}"#;
        let env = Envelope::from_json(json).unwrap();
        assert_eq!(env.payload, Payload::GuildLeave(GuildLeave {}));
        assert_eq!(env.guild_id, GuildId::new(9));
    }

    #[test]
    fn a_zero_id_is_an_error_not_a_missing_id() {
        let json = br#"{"id":"x","type":"guild.leave","version":1,"shard_id":0,
            "occurred_at":5,"guild_id":"0"}"#;
        let err = Envelope::from_json(json).unwrap_err();
        assert!(err.to_string().contains("invalid guild id \"0\""), "{err}");
    }
}
