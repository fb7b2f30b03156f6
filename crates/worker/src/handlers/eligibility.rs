//! `eligibility.check`: re-evaluate one member or a whole community.

use std::collections::HashSet;

use wire::{
    check::{CheckPriority, EligibilityCheck},
    Envelope, UserId,
};

use super::{membership::community_of, Handlers};
use crate::HandlerError;

pub(super) async fn check(
    handlers: &Handlers,
    check: &EligibilityCheck,
) -> Result<(), HandlerError> {
    match check.user_id {
        Some(_) => check_members(handlers, std::slice::from_ref(check)).await,
        None => {
            if handlers.role_sync.is_none() {
                return unconfigured(check);
            }
            // The whole community (a rule changed): make everyone due now;
            // the periodic scan works through them in bulk.
            let guild = check.guild_id;
            let tenant = community_of(&handlers.store, guild).await?;
            let tx = handlers.store.begin(tenant).await?;
            let n = tx.profiles().mark_all_due().await?;
            tx.commit().await?;
            tracing::info!(%guild, members = n, reason = %check.reason, "community marked for re-check");
            Ok(())
        }
    }
}

/// The most members one check leases and decides in its transactions: as
/// many as a pass of the periodic scan (`RoleSyncConfig::scan_batch`'s
/// default). A batch of check messages, each naming a batch of joins, can
/// name thousands.
const MEMBERS_PER_CHECK: usize = 500;

/// Checks of members of one community, as one batch per priority and
/// reason (see `RoleSync::check_members`): under load, a community's
/// queued checks cost a few transactions together instead of a few each.
pub(super) async fn check_members(
    handlers: &Handlers,
    checks: &[EligibilityCheck],
) -> Result<(), HandlerError> {
    let Some(first) = checks.first() else {
        return Ok(());
    };
    let Some(sync) = &handlers.role_sync else {
        return unconfigured(first);
    };
    let guild = first.guild_id;
    if let Some(other) = checks.iter().find(|c| c.guild_id != guild) {
        return Err(HandlerError::Permanent(format!(
            "a batch of checks for guild {guild} holds one for guild {}",
            other.guild_id
        )));
    }
    let tenant = community_of(&handlers.store, guild).await?;
    // Interactive checks read the chain afresh and their role changes go
    // first; each reason is in the audit log of the changes it causes.
    let mut groups: Vec<((CheckPriority, &str), Vec<UserId>)> = Vec::new();
    let mut seen: HashSet<(usize, UserId)> = HashSet::new();
    for check in checks {
        if check.user_id.is_none() {
            return Err(HandlerError::Permanent(
                "a community-wide check in a batch of member checks".to_owned(),
            ));
        }
        let key = (check.priority, check.reason.as_str());
        let group = match groups.iter().position(|(k, _)| *k == key) {
            Some(group) => group,
            None => {
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        for user in check.members() {
            if seen.insert((group, user)) {
                groups[group].1.push(user);
            }
        }
    }
    for ((priority, reason), users) in &groups {
        for users in users.chunks(MEMBERS_PER_CHECK) {
            let report = sync
                .check_members(tenant, guild, users, *priority, reason, &handlers.stopping)
                .await?;
            if report.interrupted > 0 {
                // Shutting down: what was done is recorded; the rest is asked
                // again (of this worker's successor or a peer).
                return Err(HandlerError::Transient(format!(
                    "{} of {} member checks in guild {guild} left for another worker: shutting down",
                    report.interrupted,
                    users.len()
                )));
            }
            if report.failed_changes > 0 {
                let reason = format!(
                    "{} role change(s) failed in guild {guild}: {}",
                    report.failed_changes,
                    report.first_error.unwrap_or_default()
                );
                // Nothing goes to Discord while the invalid-request breaker is
                // open (up to its window): come back once it has closed,
                // however many attempts that takes, rather than spend them all
                // meanwhile and land in the dead letters. A retry checks the
                // members whose changes went through again and finds nothing
                // left to do for them.
                if let Some(after) = sync.discord().breaker_open_for() {
                    return Err(HandlerError::RetryAfter { reason, after });
                }
                return Err(HandlerError::Transient(reason));
            }
        }
    }
    Ok(())
}

fn unconfigured(check: &EligibilityCheck) -> Result<(), HandlerError> {
    tracing::warn!(reason = %check.reason, "eligibility check received but role sync is not configured (DISCORD_TOKEN, CHAINS)");
    Ok(())
}

/// Asks for an interactive check of the envelope's member. Best effort: if
/// it cannot be published, the periodic scan still reaches the member (a
/// member who joined is due for it a minute later, see
/// `domain::role_sync::FIRST_CHECK_WAIT`).
pub(super) async fn request(handlers: &Handlers, envelope: &Envelope, reason: &str) {
    if let Some(user) = envelope.user_id {
        // Derived from the event, so a redelivered event asks only once
        // within JetStream's duplicate window.
        let id = format!("check:{}", envelope.id.as_str());
        request_for(handlers, envelope, user, id, reason).await;
    }
}

/// Asks for an interactive check of `user` (another member than the
/// event's, e.g. the one a wallet was reclaimed from). `id` is the dedupe
/// key and must be derived from the event.
pub(super) async fn request_for(
    handlers: &Handlers,
    envelope: &Envelope,
    user: wire::UserId,
    id: String,
    reason: &str,
) {
    if handlers.role_sync.is_none() {
        return;
    }
    let Some(guild_id) = envelope.guild_id else {
        return;
    };
    publish_request(
        &handlers.js,
        &handlers.namespace,
        guild_id,
        user,
        id,
        reason,
        envelope.occurred_at,
    )
    .await;
}

/// Publishes an interactive check of `user`, asked for by an event that
/// occurred at `occurred_at`. Best effort, as [`request`] says.
pub(super) async fn publish_request(
    js: &async_nats::jetstream::Context,
    namespace: &bus::Namespace,
    guild: wire::GuildId,
    user: wire::UserId,
    id: String,
    reason: &str,
    occurred_at: i64,
) {
    let check = domain::recheck::member_recheck(guild, user, id, reason, occurred_at);
    publish(js, namespace, &check).await;
}

/// Publishes a check of members. Best effort, as [`request`] says.
pub(super) async fn publish(
    js: &async_nats::jetstream::Context,
    namespace: &bus::Namespace,
    check: &EligibilityCheck,
) {
    if let Err(e) = bus::publish_check(js, namespace, check).await {
        tracing::warn!(error = %e, members = check.members().count(), "could not request an eligibility check; the periodic scan will do it");
    }
}

/// After a member sync completed: every member of the community is checked
/// in bulk, which queues role changes both ways — for members who hold a
/// managed role without qualifying (after the grace period) and for those
/// who qualify but lack it. Best effort: if it cannot be published, the
/// periodic scan reaches every member within its period (the synced ones
/// new to Gatehouse at once).
pub(super) async fn reconcile_synced(
    handlers: &Handlers,
    envelope: &Envelope,
    sync: &store::repo::MemberSync,
) {
    let Some(guild) = envelope.guild_id else {
        return;
    };
    // Derived from the sync, so a redelivery asks only once.
    let id = format!("synced:{guild}:{}", sync.nonce);
    let check = domain::recheck::community_recheck(guild, id, "members synced");
    if let Err(e) = bus::publish_check(&handlers.js, &handlers.namespace, &check).await {
        tracing::warn!(%guild, error = %e, "could not request the reconciliation of a synced member list; the periodic scan will do it");
    }
}
