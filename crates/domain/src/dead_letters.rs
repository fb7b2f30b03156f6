//! Replaying a dead letter into a community, on the record.
//!
//! Putting the message back on its subject is the bus's work, passed in as
//! a future (this crate holds no socket). What belongs here is the rule
//! around it: a replay into a community is audited in that community's log,
//! and the entry is committed only for a replay that was stored.

use std::future::Future;

use store::repo::{AuditEntry, AuditRecord};
use store::{Store, StoreError, TenantId};

use crate::{Actor, AuditAction};

/// What the audit entry says about one replay. Nothing in it may be a
/// secret: the caller passes the reason already redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The dead letter's sequence in the DEAD_LETTER stream.
    pub dead_letter: u64,
    /// The subject it was put back on, namespace included.
    pub subject: String,
    /// The message's kind (`member.join`, `eligibility.check`, …).
    pub kind: String,
    /// The message's own id (its envelope id), which the replay keeps.
    pub message_id: Option<String>,
    /// Why it had been dead-lettered, and after how many deliveries.
    pub reason: Option<String>,
    pub deliveries: Option<i64>,
}

impl ReplayRecord {
    /// The audit entry for this replay, done by `actor`.
    pub fn entry(&self, actor: &Actor) -> AuditEntry {
        actor
            .entry(AuditAction::DeadLetterReplayed)
            .target("dead_letter", self.dead_letter.to_string())
            .metadata(serde_json::json!({
                "subject": self.subject,
                "kind": self.kind,
                "message_id": self.message_id,
                "reason": self.reason,
                "deliveries": self.deliveries,
            }))
    }
}

/// Why an audited replay did not fully happen; each says whether the
/// message was replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error("not replayed: its audit entry could not be written: {0}")]
    Audit(StoreError),
    #[error("not replayed: {0}")]
    Replay(E),
    #[error(
        "replayed, but its audit entry could not be committed ({0}); the dead letter is kept, \
         so replaying it again records the entry (the publish is deduplicated)"
    )]
    Commit(StoreError),
}

/// Runs `replay` inside a transaction of `community` that has already
/// appended the replay's audit entry, and commits only once `replay` has
/// succeeded. Writing the entry first proves the database takes it before
/// anything is published, so the only way to a replay without its entry is
/// a commit failing after the publish; that is reported as
/// [`ReplayError::Commit`], never swallowed.
pub async fn replay_audited<T, E, F>(
    store: &Store,
    community: TenantId,
    actor: &Actor,
    record: &ReplayRecord,
    replay: F,
) -> Result<(T, AuditRecord), ReplayError<E>>
where
    F: Future<Output = Result<T, E>>,
{
    let tx = store.begin(community).await.map_err(ReplayError::Audit)?;
    let entry = tx
        .audit()
        .append(&record.entry(actor))
        .await
        .map_err(ReplayError::Audit)?;
    let replayed = match replay.await {
        Ok(replayed) => replayed,
        Err(e) => {
            // The entry must not outlive a replay that did not happen; a
            // failed rollback ends the transaction all the same.
            let _ = tx.rollback().await;
            return Err(ReplayError::Replay(e));
        }
    };
    tx.commit().await.map_err(ReplayError::Commit)?;
    Ok((replayed, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::repo::ActorType;

    #[test]
    fn the_entry_names_the_dead_letter_and_what_was_replayed() {
        let record = ReplayRecord {
            dead_letter: 12,
            subject: "events.member.join".into(),
            kind: "member.join".into(),
            message_id: Some("e1".into()),
            reason: Some("gave up after 5 attempts: timeout".into()),
            deliveries: Some(5),
        };
        let entry = record.entry(&Actor::Admin(Some("alice".into())));
        assert_eq!(entry.action, AuditAction::DeadLetterReplayed);
        assert_eq!(
            (entry.actor_type, entry.actor_id.as_deref()),
            (ActorType::Admin, Some("alice"))
        );
        assert_eq!(
            (entry.target_type.as_deref(), entry.target_id.as_deref()),
            (Some("dead_letter"), Some("12"))
        );
        assert_eq!(entry.metadata["subject"], "events.member.join");
        assert_eq!(entry.metadata["message_id"], "e1");
        assert_eq!(entry.metadata["deliveries"], 5);
    }
}
