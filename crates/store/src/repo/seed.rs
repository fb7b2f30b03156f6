//! Bulk data for load tests (`gatehouse bench db`): many members and rules
//! in a few statements, inside the tenant transaction like everything else.

use std::ops::RangeInclusive;

use tokio_postgres::types::Type;

use crate::{StoreError, TenantTx};

pub struct Seed<'t> {
    tx: &'t TenantTx,
}

impl<'t> Seed<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Seed { tx }
    }

    /// A present member for every Discord user id in `users`; existing
    /// members are left as they are.
    pub async fn members(&self, users: RangeInclusive<i64>) -> Result<(), StoreError> {
        self.tx
            .query(
                "seeding members",
                "INSERT INTO profiles (community_id, discord_user_id, joined_at)
                 SELECT $1, g, now() FROM generate_series($2::bigint, $3::bigint) AS g
                 ON CONFLICT DO NOTHING",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (users.start(), Type::INT8),
                    (users.end(), Type::INT8),
                ],
            )
            .await?;
        Ok(())
    }

    /// `count` score-threshold rules, rule `r` granting role id `r` at a
    /// score of `10 r`; existing rules for those roles are left alone.
    pub async fn score_rules(&self, count: i64) -> Result<(), StoreError> {
        self.tx
            .query(
                "seeding rules",
                "INSERT INTO eligibility_rules (community_id, rule_type, parameters, role_discord_id, priority)
                 SELECT $1, 'score_threshold', jsonb_build_object('min_score', r * 10), r, r
                 FROM generate_series(1::bigint, $2::bigint) AS r
                 ON CONFLICT DO NOTHING",
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&count, Type::INT8)],
            )
            .await?;
        Ok(())
    }
}
