use tokio_postgres::{types::Type, Row};
use wire::UserId;

use super::col;
use crate::ids::{db_id, id_from_db};
use crate::{StoreError, TenantTx};

/// The callback an interaction is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    /// A message (callback type 4), as the member will read it.
    Message(String),
    /// "Thinking…" (type 5); the answer follows as an edit.
    Deferred,
}

/// A reply committed with its command's effect, to be sent once the
/// transaction is over (migration 0016).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingReply {
    pub body: ReplyBody,
    /// Re-check the member who sent the command once the reply is out.
    pub recheck_self: bool,
    /// Re-check this member too (one a wallet was taken from).
    pub recheck_other: Option<UserId>,
}

impl PendingReply {
    /// A reply with nothing to re-check.
    pub fn only(body: ReplyBody) -> Self {
        PendingReply {
            body,
            recheck_self: false,
            recheck_other: None,
        }
    }

    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let kind: &str = col(row, "kind")?;
        let content: Option<String> = col(row, "content")?;
        let body = match (kind, content) {
            ("message", Some(text)) => ReplyBody::Message(text),
            ("deferred", None) => ReplyBody::Deferred,
            (kind, content) => {
                return Err(StoreError::Corrupt {
                    what: "interaction reply",
                    reason: format!(
                        "kind {kind:?} with{} content",
                        if content.is_some() { "" } else { "out" }
                    ),
                })
            }
        };
        let other: Option<i64> = col(row, "recheck_user_id")?;
        Ok(PendingReply {
            body,
            recheck_self: col(row, "recheck_self")?,
            recheck_other: other
                .map(|id| id_from_db(id, "recheck_user_id"))
                .transpose()?,
        })
    }
}

/// Replies between their commit and Discord taking them, keyed by the
/// envelope id whose claim they belong to.
pub struct InteractionReplies<'t> {
    tx: &'t TenantTx,
}

impl<'t> InteractionReplies<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        InteractionReplies { tx }
    }

    /// Stores the reply to `event_id`, whose claim must be in this
    /// transaction (or committed).
    pub async fn record(&self, event_id: &str, reply: &PendingReply) -> Result<(), StoreError> {
        let (kind, content) = match &reply.body {
            ReplyBody::Message(text) => ("message", Some(text.as_str())),
            ReplyBody::Deferred => ("deferred", None),
        };
        let other = reply
            .recheck_other
            .map(|id| db_id(id, "recheck_user_id"))
            .transpose()?;
        self.tx
            .query(
                "storing an interaction reply",
                "INSERT INTO interaction_replies
                    (community_id, event_id, kind, content, recheck_self, recheck_user_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&event_id, Type::TEXT),
                    (&kind, Type::TEXT),
                    (&content, Type::TEXT),
                    (&reply.recheck_self, Type::BOOL),
                    (&other, Type::INT8),
                ],
            )
            .await?;
        Ok(())
    }

    /// The reply to `event_id` not yet known to have reached Discord.
    pub async fn pending(&self, event_id: &str) -> Result<Option<PendingReply>, StoreError> {
        self.tx
            .query_opt(
                "reading an interaction reply",
                "SELECT kind, content, recheck_self, recheck_user_id FROM interaction_replies
                 WHERE community_id = $1 AND event_id = $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&event_id, Type::TEXT),
                ],
            )
            .await?
            .as_ref()
            .map(PendingReply::from_row)
            .transpose()
    }

    /// Forgets the reply to `event_id`: Discord has it, or never will.
    /// Returns false if there was none (another delivery forgot it first).
    pub async fn forget(&self, event_id: &str) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "forgetting an interaction reply",
                "DELETE FROM interaction_replies
                 WHERE community_id = $1 AND event_id = $2
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&event_id, Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Forgets replies stored more than `older_than` ago: past Discord's
    /// response window nobody can send them any more.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        let secs = older_than.as_secs_f64();
        let rows = self
            .tx
            .query(
                "pruning interaction replies",
                "DELETE FROM interaction_replies
                 WHERE community_id = $1 AND created_at < now() - make_interval(secs => $2)
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&secs, Type::FLOAT8),
                ],
            )
            .await?;
        Ok(rows.len() as u64)
    }
}
