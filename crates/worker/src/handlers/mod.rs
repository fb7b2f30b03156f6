//! What each event does to tenant data. Every effect happens in one tenant
//! transaction that also claims the envelope id, so an event is applied at
//! most once however often it is delivered.

mod commands;
mod eligibility;
mod follow_ups;
mod membership;

use std::sync::Arc;

use async_nats::jetstream;
use bus::Namespace;
use store::Store;
use wire::{check::EligibilityCheck, Envelope, GuildId, Payload, UserId};

use crate::{Delivery, HandlerError, RoleSync};

/// Batches whose follow-ups may run at once, unless configured.
const DEFAULT_FOLLOW_UPS: usize = 8;

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
    /// Cancelled when the worker shuts down: long work stops early.
    stopping: tokio_util::sync::CancellationToken,
    /// Checks and badges of new members, run outside their community's turn.
    follow_ups: follow_ups::FollowUps,
}

impl Handlers {
    pub fn new(
        store: Store,
        js: jetstream::Context,
        namespace: Namespace,
        role_sync: Option<Arc<RoleSync>>,
        link_site: Option<domain::wallets::Site>,
    ) -> Self {
        let follow_ups = follow_ups::FollowUps::new(
            store.background(),
            js.clone(),
            namespace.clone(),
            role_sync.is_some(),
            DEFAULT_FOLLOW_UPS,
        );
        Handlers {
            follow_ups,
            store,
            js,
            namespace,
            role_sync,
            link_site,
            commands: crate::command_limits::CommandLimiter::new(&crate::CommandLimits::default()),
            provisioning: crate::Provisioning::Open,
            stopping: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Stops long work (a batch of checks waiting on Discord's limits)
    /// early once `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: tokio_util::sync::CancellationToken) -> Self {
        self.stopping = shutdown;
        self
    }

    /// Runs up to `in_flight` batches' follow-ups (checks and badges of new
    /// members) at once (see `follow_ups`).
    pub fn with_follow_ups(mut self, in_flight: usize) -> Self {
        self.follow_ups = follow_ups::FollowUps::new(
            self.store.background(),
            self.js.clone(),
            self.namespace.clone(),
            self.role_sync.is_some(),
            in_flight,
        );
        self
    }

    /// Waits up to `grace` for follow-ups still running, at shutdown.
    pub async fn finish(&self, grace: std::time::Duration) {
        self.follow_ups.finish(grace).await;
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
                let applied =
                    membership::member_events(&self.store, &[(envelope, *delivery)]).await?;
                self.after_membership(&[(envelope, *delivery)], &applied)
                    .await;
                Ok(())
            }
            Payload::MembersChunk(chunk) => {
                let synced =
                    membership::members_chunk(&self.store, envelope, chunk, delivery).await?;
                if let Some(sync) = synced {
                    eligibility::reconcile_synced(self, envelope, &sync).await;
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
    /// Whether messages on `subject` may be handled together with others
    /// of their community: membership events, which are applied a batch per
    /// transaction (see `membership::member_events`), and eligibility
    /// checks, checked a batch at a time (see
    /// `eligibility::check_members`). A consumer reads one stream, so a
    /// batch never mixes the two.
    pub fn batches(&self, subject: &str) -> bool {
        is_membership(self.namespace.strip(subject).unwrap_or(subject)) || self.is_check(subject)
    }

    fn is_check(&self, subject: &str) -> bool {
        self.namespace.strip(subject).unwrap_or(subject) == wire::subjects::ELIGIBILITY_CHECK
    }

    /// Handles messages of one community that [`batches`](Self::batches)
    /// let through, in the order given, together: all or nothing.
    pub async fn handle_batch(
        &self,
        batch: &[(&str, &[u8], Delivery)],
    ) -> Result<(), HandlerError> {
        if batch.iter().any(|(subject, _, _)| self.is_check(subject)) {
            return self.check_batch(batch).await;
        }
        let mut envelopes = Vec::with_capacity(batch.len());
        for (subject, payload, delivery) in batch {
            if !is_membership(self.namespace.strip(subject).unwrap_or(subject)) {
                return Err(HandlerError::Permanent(format!(
                    "{subject} is not handled in batches of membership events"
                )));
            }
            let envelope = Envelope::from_json(payload)
                .map_err(|e| HandlerError::Permanent(format!("undecodable envelope: {e}")))?;
            if let Some(guild) = envelope.guild_id.filter(|g| !self.provisioning.allows(*g)) {
                return Err(HandlerError::Permanent(format!(
                    "guild {guild} is not on the allowlist"
                )));
            }
            envelopes.push((envelope, *delivery));
        }
        let events: Vec<(&Envelope, Delivery)> = envelopes.iter().map(|(e, d)| (e, *d)).collect();
        metrics::histogram!(crate::telemetry::BATCH_MESSAGES).record(events.len() as f64);
        let applied = membership::member_events(&self.store, &events).await?;
        self.after_membership(&events, &applied).await;
        Ok(())
    }

    /// Eligibility checks of one community, checked together. Only member
    /// checks come in batches: a community-wide one (or a bad message)
    /// fails the batch, which is then handled one message at a time.
    async fn check_batch(&self, batch: &[(&str, &[u8], Delivery)]) -> Result<(), HandlerError> {
        let mut checks = Vec::with_capacity(batch.len());
        for (subject, payload, _) in batch {
            if !self.is_check(subject) {
                return Err(HandlerError::Permanent(format!(
                    "{subject} is not handled in batches of eligibility checks"
                )));
            }
            checks.push(EligibilityCheck::from_json(payload).map_err(|e| {
                HandlerError::Permanent(format!("undecodable eligibility check: {e}"))
            })?);
        }
        metrics::histogram!(crate::telemetry::BATCH_MESSAGES).record(checks.len() as f64);
        eligibility::check_members(self, &checks).await
    }

    /// What follows a committed membership change: a member who joined may
    /// already qualify, so they are checked ahead of the periodic scan
    /// (which would also catch them), and their badges evaluated — beside
    /// the community's next batches, not before them (see `follow_ups`).
    async fn after_membership(&self, events: &[(&Envelope, Delivery)], applied: &[bool]) {
        let joined: Vec<Envelope> = events
            .iter()
            .zip(applied)
            .filter(|((envelope, _), applied)| {
                **applied && matches!(envelope.payload, Payload::MemberJoin(_))
            })
            .map(|((envelope, _), _)| (*envelope).clone())
            .collect();
        self.follow_ups.after_joins(joined).await;
    }
}

fn is_membership(contract: &str) -> bool {
    matches!(
        contract,
        wire::subjects::MEMBER_JOIN | wire::subjects::MEMBER_UPDATE | wire::subjects::MEMBER_LEAVE
    )
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
