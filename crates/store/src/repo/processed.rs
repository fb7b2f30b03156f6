use tokio_postgres::types::Type;

use crate::{StoreError, TenantTx};

/// The ids of events whose effects were committed, for exactly-once
/// processing: claim the id in the same transaction as the effect.
pub struct ProcessedEvents<'t> {
    tx: &'t TenantTx,
}

impl<'t> ProcessedEvents<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        ProcessedEvents { tx }
    }

    /// Records the event as processed. Returns false if it already was: the
    /// caller must then skip the effect (and may commit and acknowledge).
    ///
    /// Two workers racing on the same id both reach this insert; the second
    /// waits for the first's transaction and then sees the conflict, so only
    /// one effect ever commits.
    pub async fn claim(&self, event_id: &str, event_type: &str) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "recording a processed event",
                "INSERT INTO processed_events (community_id, event_id, event_type)
                 VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING
                 RETURNING event_id",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&event_id, Type::TEXT),
                    (&event_type, Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// [`claim`](Self::claim) for many events in one statement: `events`
    /// are `(event id, event type)`. Returns the ids claimed now; an id
    /// listed twice is claimed (and returned) once, so the caller applies
    /// an effect for the first of its copies only.
    pub async fn claim_many(
        &self,
        events: &[(&str, &str)],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if events.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let (ids, types): (Vec<&str>, Vec<&str>) = events.iter().copied().unzip();
        let rows = self
            .tx
            .query(
                "recording processed events",
                // A function, planned once per server connection (migration 0019).
                "SELECT * FROM claim_events($1, $2, $3)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&ids, Type::TEXT_ARRAY),
                    (&types, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                row.try_get::<_, String>(0)
                    .map_err(|e| StoreError::query("recording processed events", e))
            })
            .collect()
    }

    /// Forgets ids processed more than `older_than` ago. They only need to
    /// outlive the window in which a duplicate can still arrive.
    pub async fn prune(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        let secs = older_than.as_secs_f64();
        let rows = self
            .tx
            .query(
                "pruning processed events",
                "DELETE FROM processed_events
                 WHERE community_id = $1 AND processed_at < now() - make_interval(secs => $2)
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
