//! What each event does to tenant data. Every effect happens in one tenant
//! transaction that also claims the envelope id, so an event is applied at
//! most once however often it is delivered.

mod commands;
mod eligibility;
mod membership;

use std::sync::Arc;

use async_nats::jetstream;
use bus::Namespace;
use store::Store;
use wire::{check::EligibilityCheck, Envelope, GuildId, Payload, UserId};

use crate::{Delivery, HandlerError, RoleSync};

/// The event handlers, sharing one store.
pub struct Handlers {
    store: Store,
    js: jetstream::Context,
    namespace: Namespace,
    role_sync: Option<Arc<RoleSync>>,
    /// The public address of the wallet-link page; `None`: linking is off.
    link_site: Option<domain::wallets::Site>,
    commands: crate::command_limits::CommandLimiter,
    provisioning: crate::Provisioning,
}

impl Handlers {
    pub fn new(
        store: Store,
        js: jetstream::Context,
        namespace: Namespace,
        role_sync: Option<Arc<RoleSync>>,
        link_site: Option<domain::wallets::Site>,
    ) -> Self {
        Handlers {
            store,
            js,
            namespace,
            role_sync,
            link_site,
            commands: crate::command_limits::CommandLimiter::new(&crate::CommandLimits::default()),
            provisioning: crate::Provisioning::Open,
        }
    }

    /// Limits slash commands as `limits` says (the default otherwise).
    pub fn with_command_limits(mut self, limits: &crate::CommandLimits) -> Self {
        self.commands = crate::command_limits::CommandLimiter::new(limits);
        self
    }

    /// Serves only the servers `provisioning` allows.
    pub fn with_provisioning(mut self, provisioning: crate::Provisioning) -> Self {
        self.provisioning = provisioning;
        self
    }

    /// Decodes and handles one message by its subject.
    pub async fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let contract = self.namespace.strip(subject).unwrap_or(subject);
        if contract == wire::subjects::ELIGIBILITY_CHECK {
            let check = EligibilityCheck::from_json(payload).map_err(|e| {
                HandlerError::Permanent(format!("undecodable eligibility check: {e}"))
            })?;
            return eligibility::check(self, &check).await;
        }
        let envelope = Envelope::from_json(payload)
            .map_err(|e| HandlerError::Permanent(format!("undecodable envelope: {e}")))?;
        self.handle(&envelope, delivery).await
    }

    pub async fn handle(
        &self,
        envelope: &Envelope,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        if let Some(guild) = envelope.guild_id.filter(|g| !self.provisioning.allows(*g)) {
            // Not approved: no community, and nothing of it in the database.
            metrics::counter!("worker_events_unapproved_total").increment(1);
            tracing::debug!(%guild, kind = envelope.payload.kind(), "event of a server that is not on the allowlist; dropped");
            return Ok(());
        }
        match &envelope.payload {
            Payload::GuildJoin(join) => membership::guild_join(&self.store, envelope, join).await,
            Payload::GuildLeave(_) => membership::guild_leave(&self.store, envelope).await,
            Payload::GuildUnavailable(_) => {
                // An outage, not a leave: nothing changes but a metric.
                metrics::counter!("worker_guild_unavailable_total").increment(1);
                Ok(())
            }
            Payload::MemberJoin(_) | Payload::MemberUpdate(_) | Payload::MemberLeave(_) => {
                let applied = membership::member_event(&self.store, envelope, delivery).await?;
                if applied && matches!(envelope.payload, Payload::MemberJoin(_)) {
                    // A new member may already qualify: check them ahead of
                    // the periodic scan (which would also catch them).
                    eligibility::request(self, envelope, "member.join").await;
                    self.award_badges(envelope).await;
                }
                Ok(())
            }
            Payload::InteractionCreate(interaction) => {
                commands::interaction(self, envelope, interaction, delivery).await
            }
            Payload::Unknown { kind, .. } => Err(HandlerError::Permanent(format!(
                "unknown event type {kind:?}; upgrade the worker to handle it"
            ))),
        }
    }
}

impl Handlers {
    /// Awards the badges a member earned by joining. Best effort, after the
    /// join committed: awards are idempotent, and the periodic scan
    /// evaluates every member again, so a failure here only delays them.
    async fn award_badges(&self, envelope: &Envelope) {
        let (Ok(guild), Ok(user)) = (guild_of(envelope), user_of(envelope)) else {
            return;
        };
        let result = match membership::community_of(&self.store, guild).await {
            Ok(tenant) => domain::badges::evaluate_member(&self.store, tenant, user)
                .await
                .map_err(HandlerError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(awarded) if !awarded.is_empty() => {
                tracing::debug!(%guild, %user, badges = awarded.len(), "badges awarded on join");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%guild, %user, error = %e, "badge evaluation on join failed; the periodic scan will retry");
            }
        }
    }
}

fn guild_of(envelope: &Envelope) -> Result<GuildId, HandlerError> {
    envelope.guild_id.ok_or_else(|| {
        HandlerError::Permanent(format!("{} without guild_id", envelope.payload.kind()))
    })
}

fn user_of(envelope: &Envelope) -> Result<UserId, HandlerError> {
    envelope.user_id.ok_or_else(|| {
        HandlerError::Permanent(format!("{} without user_id", envelope.payload.kind()))
    })
}
