//! What each event does to tenant data. Every effect happens in one tenant
//! transaction that also claims the envelope id, so an event is applied at
//! most once however often it is delivered.

mod membership;

use store::{Snowflake, Store};
use wire::{Envelope, Payload};

use crate::{Delivery, HandlerError};

/// The event handlers, sharing one store.
pub struct Handlers {
    store: Store,
}

impl Handlers {
    pub fn new(store: Store) -> Self {
        Handlers { store }
    }

    pub async fn handle(
        &self,
        envelope: &Envelope,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        match &envelope.payload {
            Payload::GuildJoin(join) => membership::guild_join(&self.store, envelope, join).await,
            Payload::GuildLeave(_) => membership::guild_leave(&self.store, envelope).await,
            Payload::GuildUnavailable(_) => {
                // An outage, not a leave: nothing changes but a metric.
                metrics::counter!("worker_guild_unavailable_total").increment(1);
                Ok(())
            }
            Payload::MemberJoin(_) | Payload::MemberUpdate(_) | Payload::MemberLeave(_) => {
                membership::member_event(&self.store, envelope, delivery).await
            }
            Payload::InteractionCreate(_) => Err(HandlerError::Permanent(
                "interactions are not handled by this worker version".into(),
            )),
            Payload::Unknown { kind, .. } => Err(HandlerError::Permanent(format!(
                "unknown event type {kind:?}; upgrade the worker to handle it"
            ))),
        }
    }
}

/// The envelope's guild, as the store's id type.
fn guild_of(envelope: &Envelope) -> Result<Snowflake, HandlerError> {
    let guild = envelope.guild_id.ok_or_else(|| {
        HandlerError::Permanent(format!("{} without guild_id", envelope.payload.kind()))
    })?;
    Snowflake::new(guild.get()).map_err(|e| HandlerError::Permanent(e.to_string()))
}

fn user_of(envelope: &Envelope) -> Result<Snowflake, HandlerError> {
    let user = envelope.user_id.ok_or_else(|| {
        HandlerError::Permanent(format!("{} without user_id", envelope.payload.kind()))
    })?;
    Snowflake::new(user.get()).map_err(|e| HandlerError::Permanent(e.to_string()))
}
