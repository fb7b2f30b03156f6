use std::time::Duration;

use tokio_postgres::types::Type;

use super::db_enum;
use crate::{StoreError, TenantTx};

db_enum!(
    /// What role sync could not do (migration 0011): a role change Discord
    /// refused with 429, or a rule outcome left undecided because its chain
    /// could not be read.
    SyncCounter {
        Discord429 = "discord_429",
        ChainUndecided = "chain_undecided",
    }
);

/// Per-minute counts of what role sync could not do, for the sync status.
pub struct SyncCounters<'t> {
    tx: &'t TenantTx,
}

impl<'t> SyncCounters<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        SyncCounters { tx }
    }

    /// Adds `n` to `counter` (with `label`, e.g. a chain) for the current
    /// minute.
    pub async fn add(&self, counter: SyncCounter, label: &str, n: u32) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.tx
            .query(
                "counting what role sync could not do",
                "INSERT INTO sync_counters (community_id, minute, counter, label, count)
                 VALUES ($1, date_trunc('minute', now()), $2, $3, $4)
                 ON CONFLICT (community_id, minute, counter, label)
                 DO UPDATE SET count = sync_counters.count + excluded.count",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&counter.as_str(), Type::TEXT),
                    (&label, Type::TEXT),
                    (&n, Type::INT4),
                ],
            )
            .await?;
        Ok(())
    }

    /// Forgets minutes older than `keep`.
    pub async fn prune(&self, keep: Duration) -> Result<u64, StoreError> {
        let seconds = keep.as_secs_f64();
        let rows = self
            .tx
            .query(
                "pruning role sync counters",
                "DELETE FROM sync_counters
                 WHERE community_id = $1 AND minute < now() - make_interval(secs => $2)
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&seconds, Type::FLOAT8),
                ],
            )
            .await?;
        Ok(rows.len() as u64)
    }
}
