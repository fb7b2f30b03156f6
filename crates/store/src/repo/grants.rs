use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};

use super::{col, id_col};
use wire::RoleId;

use crate::ids::db_id;
use crate::{ProfileId, RuleId, StoreError, TenantTx, WalletAddress};

/// What one rule last decided for one member.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleGrant {
    pub profile_id: ProfileId,
    pub rule_id: RuleId,
    pub role_discord_id: RoleId,
    /// `None` until a decision was ever reached.
    pub eligible: Option<bool>,
    pub failing_since: Option<DateTime<Utc>>,
    pub detail: String,
    pub checked_at: DateTime<Utc>,
    /// The wallets the decision was made with.
    pub wallets: Vec<WalletAddress>,
}

impl RoleGrant {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(RoleGrant {
            profile_id: col(row, "profile_id")?,
            rule_id: col(row, "rule_id")?,
            role_discord_id: id_col(row, "role_discord_id")?,
            eligible: col(row, "eligible")?,
            failing_since: col(row, "failing_since")?,
            detail: col(row, "detail")?,
            checked_at: col(row, "checked_at")?,
            wallets: col::<Vec<&str>>(row, "wallets")?
                .into_iter()
                .map(WalletAddress::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Corrupt {
                    what: "role grant wallet",
                    reason: e.to_string(),
                })?,
        })
    }
}

const COLUMNS: &str =
    "profile_id, rule_id, role_discord_id, eligible, failing_since, detail, checked_at, wallets";

pub struct RoleGrants<'t> {
    tx: &'t TenantTx,
}

impl<'t> RoleGrants<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        RoleGrants { tx }
    }

    /// Every rule decision recorded for these profiles.
    pub async fn for_profiles(&self, profiles: &[ProfileId]) -> Result<Vec<RoleGrant>, StoreError> {
        // Planned at each execution, not a function: see migration 0020.
        let sql = format!(
            "SELECT {COLUMNS} FROM role_grants WHERE community_id = $1 AND profile_id = ANY($2)"
        );
        self.tx
            .query(
                "reading role grants",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profiles, Type::UUID_ARRAY),
                ],
            )
            .await?
            .iter()
            .map(RoleGrant::from_row)
            .collect()
    }

    /// Records many decisions (insert or replace) in one statement: a
    /// batch of checks writes its decisions at once, not one round trip
    /// each. Each (profile, rule) may appear once.
    pub async fn record_many(&self, grants: &[RoleGrant]) -> Result<(), StoreError> {
        if grants.is_empty() {
            return Ok(());
        }
        let profiles: Vec<ProfileId> = grants.iter().map(|g| g.profile_id).collect();
        let rules: Vec<RuleId> = grants.iter().map(|g| g.rule_id).collect();
        let roles = grants
            .iter()
            .map(|g| db_id(g.role_discord_id, "role_discord_id"))
            .collect::<Result<Vec<i64>, _>>()?;
        let eligible: Vec<Option<bool>> = grants.iter().map(|g| g.eligible).collect();
        let failing_since: Vec<Option<DateTime<Utc>>> =
            grants.iter().map(|g| g.failing_since).collect();
        let details: Vec<&str> = grants.iter().map(|g| g.detail.as_str()).collect();
        let checked_at: Vec<DateTime<Utc>> = grants.iter().map(|g| g.checked_at).collect();
        // One text[] per row: arrays of arrays do not unnest row by row in
        // PostgreSQL, so each row's wallets travel as a JSON array.
        let wallets: Vec<serde_json::Value> = grants
            .iter()
            .map(|g| g.wallets.iter().map(WalletAddress::as_str).collect())
            .collect();
        // A function, planned once per server connection (migration 0020).
        self.tx
            .query(
                "recording role grants",
                "SELECT record_role_grants($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profiles, Type::UUID_ARRAY),
                    (&rules, Type::UUID_ARRAY),
                    (&roles, Type::INT8_ARRAY),
                    (&eligible, Type::BOOL_ARRAY),
                    (&failing_since, Type::TIMESTAMPTZ_ARRAY),
                    (&details, Type::TEXT_ARRAY),
                    (&checked_at, Type::TIMESTAMPTZ_ARRAY),
                    (&wallets, Type::JSONB_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }

    /// Records a decision (insert or replace).
    pub async fn record(&self, grant: &RoleGrant) -> Result<(), StoreError> {
        let wallets: Vec<&str> = grant.wallets.iter().map(WalletAddress::as_str).collect();
        self.tx
            .query(
                "recording a role grant",
                "INSERT INTO role_grants
                    (community_id, profile_id, rule_id, role_discord_id, eligible, failing_since, detail,
                     checked_at, wallets)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (community_id, profile_id, rule_id) DO UPDATE
                    SET role_discord_id = excluded.role_discord_id, eligible = excluded.eligible,
                        failing_since = excluded.failing_since, detail = excluded.detail,
                        checked_at = excluded.checked_at, wallets = excluded.wallets",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&grant.profile_id, Type::UUID),
                    (&grant.rule_id, Type::UUID),
                    (&db_id(grant.role_discord_id, "role_discord_id")?, Type::INT8),
                    (&grant.eligible, Type::BOOL),
                    (&grant.failing_since, Type::TIMESTAMPTZ),
                    (&grant.detail, Type::TEXT),
                    (&grant.checked_at, Type::TIMESTAMPTZ),
                    (&wallets, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }
}
