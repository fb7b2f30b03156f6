use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;

use super::{col, db_enum, id_col};
use wire::GuildId;

use crate::{StoreError, TenantId, TenantTx};

db_enum!(
    /// What the community pays for.
    SubscriptionTier {
        Free = "free",
        Pro = "pro",
        Enterprise = "enterprise",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Community {
    pub id: TenantId,
    pub discord_guild_id: GuildId,
    pub name: String,
    pub theme_id: String,
    pub subscription_tier: SubscriptionTier,
    pub settings: serde_json::Value,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Community {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Community {
            id: TenantId::from(col::<Uuid>(row, "id")?),
            discord_guild_id: id_col(row, "discord_guild_id")?,
            name: col(row, "name")?,
            theme_id: col(row, "theme_id")?,
            subscription_tier: col::<&str>(row, "subscription_tier")?.parse()?,
            settings: col(row, "settings")?,
            active: col(row, "active")?,
            created_at: col(row, "created_at")?,
            updated_at: col(row, "updated_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, discord_guild_id, name, theme_id, subscription_tier, settings, active, created_at, updated_at";

/// The tenant's own community row. Creating communities is cross-tenant work
/// and lives in [`Directory`](crate::Directory).
pub struct Communities<'t> {
    tx: &'t TenantTx,
}

impl<'t> Communities<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Communities { tx }
    }

    pub async fn get(&self) -> Result<Community, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM communities WHERE id = $1");
        let row = self
            .tx
            .query_one(
                "reading the community",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?;
        Community::from_row(&row)
    }

    /// Locks the community row for the rest of the transaction (serialising
    /// its guild events) and records that its arrival is being announced.
    /// True exactly once in the community's life: for the transaction that
    /// announces it, however many copies of the guild event race here.
    pub async fn claim_announcement(&self) -> Result<bool, StoreError> {
        let tenant = self.tx.tenant();
        let row = self
            .tx
            .query_one(
                "locking the community for a guild event",
                "SELECT announced_at IS NULL AS unannounced
                 FROM communities WHERE id = $1 FOR NO KEY UPDATE",
                &[(tenant.as_uuid(), Type::UUID)],
            )
            .await?;
        let unannounced: bool = col(&row, "unannounced")?;
        if unannounced {
            self.tx
                .query(
                    "recording the community's announcement",
                    "UPDATE communities SET announced_at = now() WHERE id = $1",
                    &[(tenant.as_uuid(), Type::UUID)],
                )
                .await?;
        }
        Ok(unannounced)
    }

    /// Marks the community active or inactive; its data is kept either way.
    pub async fn set_active(&self, active: bool) -> Result<Community, StoreError> {
        let sql = format!("UPDATE communities SET active = $2 WHERE id = $1 RETURNING {COLUMNS}");
        let row = self
            .tx
            .query_one(
                "changing whether the community is active",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&active, Type::BOOL),
                ],
            )
            .await?;
        Community::from_row(&row)
    }

    pub async fn update_settings(
        &self,
        settings: &serde_json::Value,
    ) -> Result<Community, StoreError> {
        let sql = format!("UPDATE communities SET settings = $2 WHERE id = $1 RETURNING {COLUMNS}");
        let row = self
            .tx
            .query_one(
                "updating community settings",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (settings, Type::JSONB),
                ],
            )
            .await?;
        Community::from_row(&row)
    }

    /// Records that the periodic re-check finished a pass over the community.
    pub async fn record_recheck_pass(&self) -> Result<(), StoreError> {
        self.tx
            .query(
                "recording a periodic re-check pass",
                "UPDATE communities SET recheck_pass_at = now() WHERE id = $1",
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?;
        Ok(())
    }

    /// Sets what a community's admins may change: its theme and its free-form
    /// settings object. `None` keeps the current value.
    pub async fn update_admin_settings(
        &self,
        theme_id: Option<&str>,
        settings: Option<&serde_json::Value>,
    ) -> Result<Community, StoreError> {
        let sql = format!(
            "UPDATE communities
                SET theme_id = coalesce($2, theme_id), settings = coalesce($3, settings)
              WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = self
            .tx
            .query_one(
                "updating the community's settings",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&theme_id, Type::TEXT),
                    (&settings, Type::JSONB),
                ],
            )
            .await?;
        Community::from_row(&row)
    }
}
