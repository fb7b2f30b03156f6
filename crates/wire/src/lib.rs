//! The contract between Gatehouse's gateway and its workers: the event
//! envelope, its typed payloads, NATS subjects and JetStream streams.
//!
//! `docs/wire.md` is the prose version of this crate; golden fixtures in
//! `tests/fixtures/` pin the JSON. This crate must not depend on Twilight, NATS
//! or SQL, so that every side can read the contract without pulling in the others.

pub mod check;
mod envelope;
mod event_id;
mod id;
pub mod message;
pub mod payload;
pub mod subjects;
pub mod trace;
pub mod webhook;

pub use envelope::{Envelope, EventType, Payload, VERSION};
pub use event_id::{EventId, EVENT_ID_NAMESPACE};
pub use id::{
    ApplicationId, ApplicationMarker, ChannelId, ChannelMarker, CommandId, CommandMarker, GuildId,
    GuildMarker, Id, InteractionId, InteractionMarker, Marker, MessageId, MessageMarker,
    ParseIdError, ParseIdErrorKind, RoleId, RoleMarker, UserId, UserMarker,
};

/// Why an envelope could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("encoding envelope: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("decoding envelope: {0}")]
    Decode(#[source] serde_json::Error),
}
