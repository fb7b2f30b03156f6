//! The audit vocabulary: who did what.
//!
//! [`AuditAction`] is defined next to the column it types (in `store`, so
//! records read back are typed too) and exported from here as the one list
//! every front end writes from. The audit log is a record for people; no
//! decision reads it.

pub use store::repo::AuditAction;
use store::repo::{ActorType, AuditEntry, AuditFilter, AuditRecord};
use store::{Store, StoreError};

use crate::CommunityRef;

/// Who made a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Gatehouse itself: an event, a periodic re-check.
    System,
    /// A community admin or the operator. The id names them when known (an
    /// admin's name, an API key's id); the operator's shell has none.
    Admin(Option<String>),
    /// A member acting for themselves, by Discord user id.
    Member(wire::UserId),
}

impl Actor {
    /// A community admin signed in to the dashboard with Discord: named by
    /// their Discord user id, as `discord:<id>`.
    pub fn discord_admin(user: wire::UserId) -> Actor {
        Actor::Admin(Some(format!("discord:{user}")))
    }

    /// An audit entry for `action` done by this actor.
    pub fn entry(&self, action: AuditAction) -> AuditEntry {
        let entry = AuditEntry::system(action);
        match self {
            Actor::System => entry,
            Actor::Admin(None) => AuditEntry {
                actor_type: ActorType::Admin,
                ..entry
            },
            Actor::Admin(Some(id)) => entry.by(ActorType::Admin, id.clone()),
            Actor::Member(user) => entry.by(ActorType::User, user.to_string()),
        }
    }
}

/// A page of the community's audit log, newest first.
pub async fn page(
    store: &Store,
    community: CommunityRef,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let tx = store.begin(community.tenant).await?;
    let records = tx.audit().page(filter).await?;
    tx.commit().await?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_map_to_the_logs_actor_columns() {
        let e = Actor::System.entry(AuditAction::RoleGranted);
        assert_eq!((e.actor_type, e.actor_id), (ActorType::System, None));
        let e = Actor::Admin(None).entry(AuditAction::RuleCreated);
        assert_eq!((e.actor_type, e.actor_id), (ActorType::Admin, None));
        let e = Actor::Admin(Some("alice".into())).entry(AuditAction::BadgeAwarded);
        assert_eq!(
            (e.actor_type, e.actor_id.as_deref()),
            (ActorType::Admin, Some("alice"))
        );
        let user = wire::UserId::new(42).unwrap();
        let e = Actor::discord_admin(user).entry(AuditAction::RuleCreated);
        assert_eq!(
            (e.actor_type, e.actor_id.as_deref()),
            (ActorType::Admin, Some("discord:42"))
        );
        let e = Actor::Member(user).entry(AuditAction::WalletLinked);
        assert_eq!(
            (e.actor_type, e.actor_id.as_deref(), e.action),
            (ActorType::User, Some("42"), AuditAction::WalletLinked)
        );
    }

    #[test]
    fn every_action_round_trips_through_its_stored_text() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>().unwrap(), *action);
        }
        assert!("made.up".parse::<AuditAction>().is_err());
    }
}
