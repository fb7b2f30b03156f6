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
        more_user_ids: Vec::new(),
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
        more_user_ids: Vec::new(),
        reason: reason.to_owned(),
        priority: CheckPriority::Interactive,
        requested_at: requested_at_ms,
    }
}

/// As [`member_recheck`], of several members of one community in one
/// request (the members of a batch of joins); `None` for no members.
pub fn members_recheck(
    guild: GuildId,
    users: &[wire::UserId],
    id: String,
    reason: &str,
    requested_at_ms: i64,
) -> Option<EligibilityCheck> {
    let (first, more) = users.split_first()?;
    Some(EligibilityCheck {
        more_user_ids: more.to_vec(),
        ..member_recheck(guild, *first, id, reason, requested_at_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_of_several_members_names_each_once_in_order() {
        let guild = GuildId::new(1).unwrap();
        let users: Vec<wire::UserId> = (2..=4).filter_map(wire::UserId::new).collect();
        let check = members_recheck(guild, &users, "c".into(), "member.join", 7).unwrap();
        assert_eq!(check.members().collect::<Vec<_>>(), users);
        assert_eq!(check.priority, CheckPriority::Interactive);
        assert!(members_recheck(guild, &[], "c".into(), "member.join", 7).is_none());
    }
}
