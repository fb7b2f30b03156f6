use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;

use super::{col, db_enum, id_col};
use wire::RoleId;

use crate::ids::db_id;
use crate::{RuleId, StoreError, TenantId, TenantTx, WalletAddress};

db_enum!(
    /// How a rule decides eligibility. The parameters' shape per type is the
    /// eligibility crate's business; the store keeps them as JSON.
    RuleType {
        TokenBalance = "token_balance",
        NftOwnership = "nft_ownership",
        ScoreThreshold = "score_threshold",
        Custom = "custom",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct EligibilityRule {
    pub id: RuleId,
    pub community_id: TenantId,
    pub chain: Option<String>,
    /// Contract addresses share the 20-byte format of wallets.
    pub contract_address: Option<WalletAddress>,
    pub rule_type: RuleType,
    pub parameters: serde_json::Value,
    pub role_discord_id: RoleId,
    pub tier_mapping: Option<String>,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EligibilityRule {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let contract: Option<&str> = col(row, "contract_address")?;
        Ok(EligibilityRule {
            id: col(row, "id")?,
            community_id: TenantId::from(col::<Uuid>(row, "community_id")?),
            chain: col(row, "chain")?,
            contract_address: contract
                .map(WalletAddress::parse)
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    what: "contract address",
                    reason: e.to_string(),
                })?,
            rule_type: col::<&str>(row, "rule_type")?.parse()?,
            parameters: col(row, "parameters")?,
            role_discord_id: id_col(row, "role_discord_id")?,
            tier_mapping: col(row, "tier_mapping")?,
            priority: col(row, "priority")?,
            enabled: col(row, "enabled")?,
            created_at: col(row, "created_at")?,
            updated_at: col(row, "updated_at")?,
        })
    }
}

/// What a rule read returns (public for the same reason as the profiles').
pub const COLUMNS: &str = "id, community_id, chain, contract_address, rule_type, parameters, \
                       role_discord_id, tier_mapping, priority, enabled, created_at, updated_at";

#[derive(Clone, Debug)]
pub struct NewRule {
    pub chain: Option<String>,
    pub contract_address: Option<WalletAddress>,
    pub rule_type: RuleType,
    pub parameters: serde_json::Value,
    pub role_discord_id: RoleId,
    pub tier_mapping: Option<String>,
    pub priority: i32,
    pub enabled: bool,
}

pub struct Rules<'t> {
    tx: &'t TenantTx,
}

impl<'t> Rules<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Rules { tx }
    }

    /// The rules that currently decide roles, highest priority first.
    pub async fn list_enabled(&self) -> Result<Vec<EligibilityRule>, StoreError> {
        self.list_from("enabled_rules", "reading enabled eligibility rules")
            .await
    }

    /// Every rule, enabled or not (custom rules may combine disabled ones).
    pub async fn list_all(&self) -> Result<Vec<EligibilityRule>, StoreError> {
        self.list_from("community_rules", "reading eligibility rules")
            .await
    }

    /// The rules `function` returns, by priority: a function, planned once
    /// per server connection (migration 0019).
    async fn list_from(
        &self,
        function: &'static str,
        context: &'static str,
    ) -> Result<Vec<EligibilityRule>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {function}($1)");
        self.tx
            .query(context, &sql, &[(self.tx.tenant().as_uuid(), Type::UUID)])
            .await?
            .iter()
            .map(EligibilityRule::from_row)
            .collect()
    }

    /// Creates a rule. A second rule for the same Discord role is refused with
    /// [`StoreError::Conflict`]: one role, one deciding rule.
    pub async fn create(&self, rule: &NewRule) -> Result<EligibilityRule, StoreError> {
        let sql = format!(
            "INSERT INTO eligibility_rules
                (community_id, chain, contract_address, rule_type, parameters,
                 role_discord_id, tier_mapping, priority, enabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING {COLUMNS}"
        );
        let contract = rule.contract_address.as_ref().map(WalletAddress::as_str);
        let row = self
            .tx
            .query_one(
                "creating an eligibility rule",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&rule.chain, Type::TEXT),
                    (&contract, Type::TEXT),
                    (&rule.rule_type.as_str(), Type::TEXT),
                    (&rule.parameters, Type::JSONB),
                    (&db_id(rule.role_discord_id, "role_discord_id")?, Type::INT8),
                    (&rule.tier_mapping, Type::TEXT),
                    (&rule.priority, Type::INT4),
                    (&rule.enabled, Type::BOOL),
                ],
            )
            .await?;
        EligibilityRule::from_row(&row)
    }

    /// Replaces what a rule checks and grants, keeping its id and whether
    /// it is enabled; `None` if no such rule in this community.
    pub async fn update(
        &self,
        id: RuleId,
        rule: &NewRule,
    ) -> Result<Option<EligibilityRule>, StoreError> {
        let sql = format!(
            "UPDATE eligibility_rules
                SET chain = $3, contract_address = $4, rule_type = $5, parameters = $6,
                    role_discord_id = $7, tier_mapping = $8, priority = $9
             WHERE community_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        );
        let contract = rule.contract_address.as_ref().map(WalletAddress::as_str);
        self.tx
            .query_opt(
                "updating an eligibility rule",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&id, Type::UUID),
                    (&rule.chain, Type::TEXT),
                    (&contract, Type::TEXT),
                    (&rule.rule_type.as_str(), Type::TEXT),
                    (&rule.parameters, Type::JSONB),
                    (&db_id(rule.role_discord_id, "role_discord_id")?, Type::INT8),
                    (&rule.tier_mapping, Type::TEXT),
                    (&rule.priority, Type::INT4),
                ],
            )
            .await?
            .as_ref()
            .map(EligibilityRule::from_row)
            .transpose()
    }

    /// Enables or disables a rule; `None` if no such rule in this community.
    pub async fn set_enabled(
        &self,
        id: RuleId,
        enabled: bool,
    ) -> Result<Option<EligibilityRule>, StoreError> {
        let sql = format!(
            "UPDATE eligibility_rules SET enabled = $3
             WHERE community_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        );
        self.tx
            .query_opt(
                "enabling or disabling an eligibility rule",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&id, Type::UUID),
                    (&enabled, Type::BOOL),
                ],
            )
            .await?
            .as_ref()
            .map(EligibilityRule::from_row)
            .transpose()
    }

    /// Deletes a rule; false if there was none.
    pub async fn delete(&self, id: RuleId) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "deleting an eligibility rule",
                "DELETE FROM eligibility_rules WHERE community_id = $1 AND id = $2 RETURNING id",
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&id, Type::UUID)],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
