//! Asking the workers to re-check members' eligibility.

use std::future::Future;

use wire::check::{CheckPriority, EligibilityCheck};
use wire::GuildId;

/// Where re-check requests go: `eligibility.check` on the bus in
/// production. A trait so this crate holds no socket; the caller passes
/// its publisher.
pub trait Rechecks: Sync {
    /// Stores the request durably (or fails): returning `Ok` means a worker
    /// will see it.
    fn request(
        &self,
        check: &EligibilityCheck,
    ) -> impl Future<Output = Result<(), RecheckError>> + Send;
}

/// A re-check that could not be requested, with the publisher's reason.
#[derive(Debug, thiserror::Error)]
#[error("could not request the re-check: {0}")]
pub struct RecheckError(pub String);

/// A request to re-check every member of the community in bulk (its rules
/// changed). `id` is the request's dedupe key: the same id within the bus's
/// duplicate window is stored once.
pub fn community_recheck(guild: GuildId, id: String, reason: &str) -> EligibilityCheck {
    EligibilityCheck {
        id,
        guild_id: guild,
        user_id: None,
        reason: reason.to_owned(),
        priority: CheckPriority::Bulk,
        requested_at: chrono::Utc::now().timestamp_millis(),
    }
}

/// A request to re-check one member now, ahead of bulk work (they or an
/// admin asked, or their wallets changed). `id` is the dedupe key.
pub fn member_recheck(
    guild: GuildId,
    user: wire::UserId,
    id: String,
    reason: &str,
    requested_at_ms: i64,
) -> EligibilityCheck {
    EligibilityCheck {
        id,
        guild_id: guild,
        user_id: Some(user),
        reason: reason.to_owned(),
        priority: CheckPriority::Interactive,
        requested_at: requested_at_ms,
    }
}
