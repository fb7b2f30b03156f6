//! Read-only figures about a community, for summaries and reports (the
//! demo's table, a dashboard's counters). Nothing here decides anything.

use tokio_postgres::types::Type;

use super::{col, id_col};
use wire::UserId;

use crate::{RuleId, StoreError, TenantTx};

/// How many of each thing a community has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommunityCounts {
    /// Every profile, including members who left.
    pub profiles: i64,
    /// Members present now.
    pub present: i64,
    pub wallets: i64,
    /// Members some rule last found eligible.
    pub eligible: i64,
    pub roles_granted: i64,
    pub roles_removed: i64,
    pub badge_awards: i64,
}

/// Where a community's role sync stands: what an admin looks at when roles
/// lag behind the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncStatus {
    /// Members present now.
    pub members: i64,
    /// Present members whose re-check is due (new members, changed rules,
    /// the periodic period elapsed).
    pub due: i64,
    /// Members a worker is checking right now (an unexpired check lease).
    pub in_flight: i64,
    /// When the periodic re-check last finished a pass over the community.
    pub last_pass_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Decisions whose role change has not reached the member's known
    /// Discord roles yet: granted but not held, or removed but still held.
    pub changes_pending: i64,
    /// Roles granted and removed in the last hour.
    pub changes_applied_last_hour: i64,
    /// Role changes Discord refused with 429 in the last hour.
    pub discord_429s_last_hour: i64,
    /// Rule outcomes left undecided in the last hour because their chain
    /// could not be read, by chain.
    pub chain_undecided_last_hour: Vec<(String, i64)>,
    /// The latest sync of the member list from Discord (first sync, or one
    /// after a fresh gateway session), if any.
    pub member_list: Option<super::MemberSync>,
}

pub struct Stats<'t> {
    tx: &'t TenantTx,
}

impl<'t> Stats<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Stats { tx }
    }

    pub async fn counts(&self) -> Result<CommunityCounts, StoreError> {
        let row = self
            .tx
            .query_one(
                "counting a community's members, wallets, roles and badges",
                "SELECT
                    (SELECT count(*) FROM profiles WHERE community_id = $1) AS profiles,
                    (SELECT count(*) FROM profiles WHERE community_id = $1 AND left_at IS NULL) AS present,
                    (SELECT count(*) FROM member_wallets WHERE community_id = $1) AS wallets,
                    (SELECT count(DISTINCT profile_id) FROM role_grants WHERE community_id = $1 AND eligible) AS eligible,
                    (SELECT count(*) FROM audit_logs WHERE community_id = $1 AND action = 'role.granted') AS roles_granted,
                    (SELECT count(*) FROM audit_logs WHERE community_id = $1 AND action = 'role.removed') AS roles_removed,
                    (SELECT count(*) FROM badge_awards WHERE community_id = $1) AS badge_awards",
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?;
        Ok(CommunityCounts {
            profiles: col(&row, "profiles")?,
            present: col(&row, "present")?,
            wallets: col(&row, "wallets")?,
            eligible: col(&row, "eligible")?,
            roles_granted: col(&row, "roles_granted")?,
            roles_removed: col(&row, "roles_removed")?,
            badge_awards: col(&row, "badge_awards")?,
        })
    }

    /// The present members that `rule` last found eligible: who should hold
    /// its role, by the database's last decision.
    pub async fn eligible_members(&self, rule: RuleId) -> Result<Vec<UserId>, StoreError> {
        self.tx
            .query(
                "reading a rule's eligible members",
                "SELECT p.discord_user_id FROM role_grants g
                 JOIN profiles p ON p.community_id = g.community_id AND p.id = g.profile_id
                 WHERE g.community_id = $1 AND g.rule_id = $2 AND g.eligible AND p.left_at IS NULL",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&rule, Type::UUID),
                ],
            )
            .await?
            .iter()
            .map(|row| id_col(row, "discord_user_id"))
            .collect()
    }

    /// For every member with a join time: milliseconds from joining Discord
    /// to the profile being stored (the pipeline's end-to-end latency).
    pub async fn join_latencies_ms(&self) -> Result<Vec<f64>, StoreError> {
        self.tx
            .query(
                "reading join latencies",
                "SELECT extract(epoch FROM created_at - joined_at)::float8 * 1000 AS latency_ms
                 FROM profiles WHERE community_id = $1 AND joined_at IS NOT NULL",
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .iter()
            .map(|row| col(row, "latency_ms"))
            .collect()
    }

    /// [`join_latencies_ms`](Self::join_latencies_ms) of the members who
    /// joined at or after `since` (one phase of a benchmark).
    pub async fn join_latencies_ms_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<f64>, StoreError> {
        self.tx
            .query(
                "reading join latencies",
                "SELECT extract(epoch FROM created_at - joined_at)::float8 * 1000 AS latency_ms
                 FROM profiles WHERE community_id = $1 AND joined_at >= $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&since, Type::TIMESTAMPTZ),
                ],
            )
            .await?
            .iter()
            .map(|row| col(row, "latency_ms"))
            .collect()
    }

    pub async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let row = self
            .tx
            .query_one(
                "reading the community's sync status",
                "SELECT
                    (SELECT count(*) FROM profiles
                      WHERE community_id = $1 AND left_at IS NULL) AS members,
                    (SELECT count(*) FROM profiles
                      WHERE community_id = $1 AND left_at IS NULL
                        AND (next_check_at IS NULL OR next_check_at <= now())) AS due,
                    (SELECT count(*) FROM profiles
                      WHERE community_id = $1 AND check_lease_until > now()) AS in_flight,
                    (SELECT recheck_pass_at FROM communities WHERE id = $1) AS last_pass_at,
                    (SELECT count(*) FROM role_grants g
                       JOIN profiles p ON p.community_id = g.community_id AND p.id = g.profile_id
                       JOIN eligibility_rules r ON r.community_id = g.community_id AND r.id = g.rule_id
                      WHERE g.community_id = $1 AND p.left_at IS NULL AND r.enabled
                        AND ((g.eligible AND NOT g.role_discord_id = ANY (p.role_ids))
                          OR (g.eligible = false AND g.failing_since IS NULL
                              AND g.role_discord_id = ANY (p.role_ids)))) AS changes_pending,
                    (SELECT count(*) FROM audit_logs
                      WHERE community_id = $1 AND action IN ('role.granted', 'role.removed')
                        AND created_at > now() - interval '1 hour') AS changes_applied_last_hour,
                    (SELECT coalesce(sum(count), 0)::int8 FROM sync_counters
                      WHERE community_id = $1 AND counter = 'discord_429'
                        AND minute > now() - interval '1 hour') AS discord_429s",
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?;
        let chains = self
            .tx
            .query(
                "counting undecided rule outcomes by chain",
                "SELECT label AS chain, sum(count)::int8 AS undecided FROM sync_counters
                  WHERE community_id = $1 AND counter = 'chain_undecided'
                    AND minute > now() - interval '1 hour'
                  GROUP BY label ORDER BY label",
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?;
        Ok(SyncStatus {
            members: col(&row, "members")?,
            due: col(&row, "due")?,
            in_flight: col(&row, "in_flight")?,
            last_pass_at: col(&row, "last_pass_at")?,
            changes_pending: col(&row, "changes_pending")?,
            changes_applied_last_hour: col(&row, "changes_applied_last_hour")?,
            discord_429s_last_hour: col(&row, "discord_429s")?,
            chain_undecided_last_hour: chains
                .iter()
                .map(|r| Ok((col(r, "chain")?, col(r, "undecided")?)))
                .collect::<Result<_, StoreError>>()?,
            member_list: super::MemberSyncs::new(self.tx).latest().await?,
        })
    }
}
