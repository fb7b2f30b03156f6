use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;

use super::{col, db_enum, id_col};
use wire::UserId;

use crate::{BadgeId, ProfileId, StoreError, TenantId, TenantTx};

db_enum!(
    /// What earns a badge.
    BadgeEvaluator {
        JoinOrder = "join_order",
        Tenure = "tenure",
        TierReached = "tier_reached",
        ManualGrant = "manual_grant",
    }
);

#[derive(Clone, Debug, PartialEq)]
pub struct Badge {
    pub id: BadgeId,
    pub community_id: TenantId,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub evaluator: BadgeEvaluator,
    pub criteria: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Badge {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Badge {
            id: col(row, "id")?,
            community_id: TenantId::from(col::<Uuid>(row, "community_id")?),
            slug: col(row, "slug")?,
            name: col(row, "name")?,
            description: col(row, "description")?,
            evaluator: col::<&str>(row, "evaluator")?.parse()?,
            criteria: col(row, "criteria")?,
            created_at: col(row, "created_at")?,
            updated_at: col(row, "updated_at")?,
        })
    }
}

const COLUMNS: &str =
    "id, community_id, slug, name, description, evaluator, criteria, created_at, updated_at";

#[derive(Clone, Debug)]
pub struct NewBadge {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub evaluator: BadgeEvaluator,
    pub criteria: serde_json::Value,
}

/// A badge held by a profile.
/// A badge with how many members hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct BadgeWithHolders {
    pub badge: Badge,
    pub holders: i64,
}

/// Where a member stands in join order: join time, then Discord id to break
/// ties, as `join_order` badges rank members.
pub type JoinPosition = (DateTime<Utc>, UserId);

#[derive(Clone, Debug, PartialEq)]
pub struct BadgeAward {
    pub badge: Badge,
    pub reason: String,
    pub awarded_at: DateTime<Utc>,
}

pub struct Badges<'t> {
    tx: &'t TenantTx,
}

impl<'t> Badges<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Badges { tx }
    }

    /// Creates the badge, or updates the definition with the same slug.
    pub async fn define(&self, badge: &NewBadge) -> Result<Badge, StoreError> {
        let sql = format!(
            "INSERT INTO badges (community_id, slug, name, description, evaluator, criteria)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (community_id, slug) DO UPDATE
                SET name = excluded.name, description = excluded.description,
                    evaluator = excluded.evaluator, criteria = excluded.criteria
             RETURNING {COLUMNS}"
        );
        let row = self
            .tx
            .query_one(
                "defining a badge",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&badge.slug, Type::TEXT),
                    (&badge.name, Type::TEXT),
                    (&badge.description, Type::TEXT),
                    (&badge.evaluator.as_str(), Type::TEXT),
                    (&badge.criteria, Type::JSONB),
                ],
            )
            .await?;
        Badge::from_row(&row)
    }

    pub async fn list(&self) -> Result<Vec<Badge>, StoreError> {
        // A function, planned once per server connection (migration 0020):
        // every batch of joins reads the badges.
        let sql = format!("SELECT {COLUMNS} FROM community_badges($1)");
        self.tx
            .query(
                "listing badges",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .iter()
            .map(Badge::from_row)
            .collect()
    }

    /// Awards a badge. Idempotent: returns false (and changes nothing) if the
    /// profile already holds it.
    pub async fn award(
        &self,
        badge_id: BadgeId,
        profile_id: ProfileId,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "awarding a badge",
                "INSERT INTO badge_awards (community_id, badge_id, profile_id, reason)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING
                 RETURNING badge_id",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&badge_id, Type::UUID),
                    (&profile_id, Type::UUID),
                    (&reason, Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Takes a badge back; false if the profile did not hold it.
    pub async fn revoke(
        &self,
        badge_id: BadgeId,
        profile_id: ProfileId,
    ) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "revoking a badge",
                "DELETE FROM badge_awards
                 WHERE community_id = $1 AND badge_id = $2 AND profile_id = $3
                 RETURNING badge_id",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&badge_id, Type::UUID),
                    (&profile_id, Type::UUID),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// The badges a profile holds, oldest first.
    pub async fn awards_for(&self, profile_id: ProfileId) -> Result<Vec<BadgeAward>, StoreError> {
        let sql = format!(
            "SELECT {cols}, a.reason, a.awarded_at
             FROM badge_awards a JOIN badges b
               ON b.community_id = a.community_id AND b.id = a.badge_id
             WHERE a.community_id = $1 AND a.profile_id = $2
             ORDER BY a.awarded_at, b.slug",
            cols = COLUMNS
                .split(", ")
                .map(|c| format!("b.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.tx
            .query(
                "reading a profile's badges",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profile_id, Type::UUID),
                ],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(BadgeAward {
                    badge: Badge::from_row(row)?,
                    reason: col(row, "reason")?,
                    awarded_at: col(row, "awarded_at")?,
                })
            })
            .collect()
    }

    /// Every badge with its number of holders, by slug.
    pub async fn list_with_holders(&self) -> Result<Vec<BadgeWithHolders>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS},
                    (SELECT count(*) FROM badge_awards a
                     WHERE a.community_id = b.community_id AND a.badge_id = b.id) AS holders
             FROM badges b WHERE b.community_id = $1 ORDER BY b.slug"
        );
        self.tx
            .query(
                "listing badges with their holders",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(BadgeWithHolders {
                    badge: Badge::from_row(row)?,
                    holders: col(row, "holders")?,
                })
            })
            .collect()
    }

    /// Which of these profiles hold which badges, as (badge id, profile id).
    pub async fn held_by(
        &self,
        profiles: &[ProfileId],
    ) -> Result<HashSet<(BadgeId, ProfileId)>, StoreError> {
        self.tx
            .query(
                "reading the badges of a batch of members",
                "SELECT badge_id, profile_id FROM badge_awards
                 WHERE community_id = $1 AND profile_id = ANY($2)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profiles, Type::UUID_ARRAY),
                ],
            )
            .await?
            .iter()
            .map(|row| Ok((col(row, "badge_id")?, col(row, "profile_id")?)))
            .collect()
    }

    /// The join position of the `n`-th member to join (1-based), or `None`
    /// while fewer have joined.
    pub async fn join_position(&self, n: i64) -> Result<Option<JoinPosition>, StoreError> {
        let row = self
            .tx
            .query_opt(
                "finding the join-order cutoff",
                "SELECT joined_at, discord_user_id FROM profiles
                 WHERE community_id = $1 AND joined_at IS NOT NULL
                 ORDER BY joined_at, discord_user_id
                 OFFSET $2 LIMIT 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&(n - 1).max(0), Type::INT8),
                ],
            )
            .await?;
        row.map(|r| Ok((col(&r, "joined_at")?, id_col(&r, "discord_user_id")?)))
            .transpose()
    }

    /// Locks a badge for the rest of the transaction and counts its awards:
    /// concurrent awarders queue on the lock, so each count includes the
    /// others' awards. `NO KEY UPDATE` is enough to queue them and, unlike
    /// `FOR UPDATE`, does not block the foreign-key checks of other badges'
    /// awards.
    pub async fn lock_and_count(&self, badge_id: BadgeId) -> Result<i64, StoreError> {
        self.tx
            .query(
                "locking a badge",
                "SELECT 1 FROM badges WHERE community_id = $1 AND id = $2 FOR NO KEY UPDATE",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&badge_id, Type::UUID),
                ],
            )
            .await?;
        let row = self
            .tx
            .query_one(
                "counting a badge's awards",
                "SELECT count(*) AS awards FROM badge_awards
                 WHERE community_id = $1 AND badge_id = $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&badge_id, Type::UUID),
                ],
            )
            .await?;
        col(&row, "awards")
    }
}
