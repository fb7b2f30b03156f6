use std::time::Duration;

use tokio_postgres::types::Type;

use crate::{StoreError, TenantTx};

/// Discord's 429 answers to the community's role changes, per minute.
pub struct Throttles<'t> {
    tx: &'t TenantTx,
}

impl<'t> Throttles<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Throttles { tx }
    }

    /// Counts `n` refusals in the current minute.
    pub async fn record(&self, n: u32) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.tx
            .query(
                "counting Discord rate limits",
                "INSERT INTO discord_throttles (community_id, minute, count)
                 VALUES ($1, date_trunc('minute', now()), $2)
                 ON CONFLICT (community_id, minute)
                 DO UPDATE SET count = discord_throttles.count + excluded.count",
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&n, Type::INT4)],
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
                "pruning Discord rate-limit counts",
                "DELETE FROM discord_throttles
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
