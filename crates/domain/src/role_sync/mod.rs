//! Eligibility → Discord roles.
//!
//! For each member checked: evaluate the community's rules, then for every
//! enabled rule with a role, [`decide`] what the outcome means for the role
//! the member holds in Discord, and write only the differences. Roles that
//! no rule manages are never touched. The policy (grace periods, outages,
//! wallet changes) is all in [`decision`]; this module loads, decides and
//! applies.

pub mod decision;
mod schedule;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use eligibility::{Evaluator, Freshness, MemberFacts};
use serde_json::json;
use store::{
    repo::{EligibilityRule, Profile, RoleGrant, SyncCounter},
    ProfileId, RuleId, Store, StoreError, TenantId,
};
use wire::check::CheckPriority;
use wire::{GuildId, RoleId, UserId};

pub use decision::{decide, Decision, Inputs, Previous};
pub use schedule::next_check;

use crate::{badges::BadgeError, rules::rule_set, Actor, AuditAction};

/// One role to add to or remove from one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub guild_id: GuildId,
    pub user_id: UserId,
    pub role_id: RoleId,
    pub add: bool,
    /// Shown in the guild's audit log.
    pub reason: String,
}

/// Why a role change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RoleChangeError {
    /// The member left the guild meanwhile; their `member.leave` closes the
    /// profile, so nothing needs retrying.
    #[error("member {user} is no longer in guild {guild}")]
    MemberGone { guild: GuildId, user: UserId },
    /// Discord answered 429: counted per community (the sync status shows
    /// it), and the next check retries.
    #[error("rate-limited by Discord: {0}")]
    RateLimited(String),
    /// Anything else; the next check sees the same difference and retries.
    #[error("{0}")]
    Failed(String),
}

/// Makes role changes in Discord (its REST API in production). Interactive
/// changes (a member is waiting) may overtake bulk ones.
pub trait RoleWriter: Send + Sync {
    fn change_role(
        &self,
        change: RoleChange,
        priority: CheckPriority,
    ) -> impl Future<Output = Result<(), RoleChangeError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Badges(#[from] BadgeError),
}

/// How long the periodic scan holds the members it claimed before their
/// checks commit. Long enough for a batch's role changes under Discord's
/// limits; short enough that a worker dying mid-batch delays those members
/// by minutes, not a whole re-check period.
pub const SCAN_CLAIM: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug)]
pub struct RoleSyncConfig {
    /// How long a member must keep failing a rule before its role goes.
    pub grace: Duration,
    /// How often every member is re-checked.
    pub recheck_period: Duration,
    /// How often each worker looks for members due a re-check.
    pub scan_interval: Duration,
    /// Members claimed per community per scan transaction.
    pub scan_batch: i64,
    /// Interactive checks (`/check`, a join, a wallet linked) reuse chain
    /// reads younger than this instead of reading again: a member asking
    /// twice, or right after another check read the same balance, costs
    /// no RPC call. Zero: always read the chain.
    pub check_min_read_age: Duration,
}

impl Default for RoleSyncConfig {
    fn default() -> Self {
        RoleSyncConfig {
            grace: Duration::from_secs(24 * 3600),
            recheck_period: Duration::from_secs(6 * 3600),
            scan_interval: Duration::from_secs(10),
            scan_batch: 500,
            // As long as `/check`'s per-member cooldown, and half the chain
            // cache's default TTL: a balance a member just changed shows
            // within half a minute, while a burst of checks on the same
            // wallets costs one read.
            check_min_read_age: Duration::from_secs(30),
        }
    }
}

/// What one check did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub members: usize,
    pub granted: usize,
    pub removed: usize,
    pub failed_changes: usize,
    /// Badges newly awarded (periodic scans evaluate badges too).
    pub badges_awarded: usize,
    /// The first failure, for the retry/dead-letter reason.
    pub first_error: Option<String>,
    /// Members skipped because another check of theirs was in progress.
    pub busy: usize,
    /// Role changes Discord refused with 429 (also in `failed_changes`).
    pub rate_limited: usize,
    /// Communities a periodic scan could not check this pass.
    pub failed_communities: usize,
    /// Members left undecided on some rule because their community's
    /// chain-read budget was spent: they are due again (the periodic
    /// scan's next pass) rather than a whole period on.
    pub deferred: usize,
}

/// How long a check may hold a member before another may take over (a
/// crashed worker's lease expires by itself).
const CHECK_LEASE: Duration = Duration::from_secs(60);

/// Role sync for every community, writing through `D`.
pub struct RoleSync<D> {
    store: Store,
    evaluator: Arc<Evaluator>,
    discord: D,
    config: RoleSyncConfig,
}

impl<D: RoleWriter> RoleSync<D> {
    /// The evaluator role sync reads chains with, shared so that a wallet
    /// proof's EIP-1271 call goes through the same breakers and limits.
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    pub fn new(
        store: Store,
        evaluator: Arc<Evaluator>,
        discord: D,
        config: RoleSyncConfig,
    ) -> Self {
        RoleSync {
            store,
            evaluator,
            discord,
            config,
        }
    }

    pub fn discord(&self) -> &D {
        &self.discord
    }

    pub fn scan_interval(&self) -> Duration {
        self.config.scan_interval
    }

    /// Checks one member now.
    pub async fn check_member(
        &self,
        tenant: TenantId,
        guild: GuildId,
        user: UserId,
        priority: CheckPriority,
        reason: &str,
    ) -> Result<CheckReport, SyncError> {
        let tx = self.store.begin(tenant).await?;
        let profile = tx.profiles().find_by_discord_user(user).await?;
        tx.commit().await?;
        let Some(profile) = profile.filter(|p| p.left_at.is_none()) else {
            // Not (or no longer) a member: nothing to sync.
            return Ok(CheckReport::default());
        };
        let freshness = match priority {
            // A member is waiting on this answer: read the chain unless a
            // read is only moments old.
            CheckPriority::Interactive => Freshness::NotOlderThan(self.config.check_min_read_age),
            CheckPriority::Bulk => Freshness::Cached,
        };
        let (report, _) = self
            .check_profiles(tenant, guild, vec![profile], priority, freshness, reason)
            .await?;
        if report.deferred > 0 {
            // The community's budget could not pay for all their reads:
            // the periodic scan picks them up next, with budget refilled,
            // instead of leaving them undecided for a period.
            let tx = self.store.begin(tenant).await?;
            tx.profiles().mark_due(user).await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    /// One pass over every active community: claims members whose re-check
    /// is due (for [`SCAN_CLAIM`], so no other worker takes them), checks
    /// them in bulk, and only then schedules their next check a period on.
    ///
    /// Communities take turns, one batch each, so a community with a huge
    /// backlog delays the others by one batch, not by its whole backlog.
    /// A community whose batch fails is logged, counted in
    /// `failed_communities` and left for the next pass; the others go on.
    pub async fn scan_due(&self) -> Result<CheckReport, SyncError> {
        let mut total = CheckReport::default();
        let mut turns: std::collections::VecDeque<(TenantId, GuildId)> =
            self.store.directory().active_communities().await?.into();
        while let Some((tenant, guild)) = turns.pop_front() {
            match self.scan_batch(tenant, guild, &mut total).await {
                Ok(true) => turns.push_back((tenant, guild)),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%guild, error = %e, "periodic re-check of a community failed; the others go on, it is retried next pass");
                    total.failed_communities += 1;
                    total.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        Ok(total)
    }

    /// Claims and checks one batch of `tenant`'s due members. True when
    /// the batch was full, so more may be due.
    async fn scan_batch(
        &self,
        tenant: TenantId,
        guild: GuildId,
        total: &mut CheckReport,
    ) -> Result<bool, SyncError> {
        let now = Utc::now();
        let tx = self.store.begin(tenant).await?;
        let due = tx.profiles().claim_due(now, self.config.scan_batch).await?;
        if due.is_empty() {
            tx.communities().record_recheck_pass().await?;
            tx.commit().await?;
            return Ok(false);
        }
        // Claimed for a short while only: if this worker dies before their
        // check commits, the members are due again soon rather than skipped
        // for a whole period. Another worker's scan skips them meanwhile; a
        // check outliving the claim is still guarded by the check lease.
        let claimed_until = now + chrono::Duration::from_std(SCAN_CLAIM).unwrap_or_default();
        let claim: Vec<(ProfileId, DateTime<Utc>)> =
            due.iter().map(|p| (p.id, claimed_until)).collect();
        tx.profiles().schedule_checks(&claim).await?;
        let schedule: Vec<(ProfileId, DateTime<Utc>)> = due
            .iter()
            .map(|p| {
                let next = next_check(tenant, p.discord_user_id, self.config.recheck_period, now);
                (p.id, next)
            })
            .collect();
        // Badges ride on the same claim: one transaction per batch.
        let badges = crate::badges::evaluate(&tx, &due, now).await?;
        let full = due.len() as i64 >= self.config.scan_batch;
        if !full {
            // Every due member is claimed: the pass is done (the checks
            // themselves follow; a member they fail to reach is due again
            // when the claim runs out).
            tx.communities().record_recheck_pass().await?;
        }
        tx.commit().await?;
        total.badges_awarded += badges.len();
        let (report, deferred) = self
            .check_profiles(
                tenant,
                guild,
                due,
                CheckPriority::Bulk,
                Freshness::Cached,
                "periodic",
            )
            .await?;
        // Checked (or being checked by another worker right now): the next
        // look is a period on. Members the community's chain-read budget
        // left undecided are due again at once instead, for the next pass.
        let schedule: Vec<(ProfileId, DateTime<Utc>)> = schedule
            .into_iter()
            .map(|(id, next)| {
                if deferred.contains(&id) {
                    (id, now)
                } else {
                    (id, next)
                }
            })
            .collect();
        let tx = self.store.begin(tenant).await?;
        tx.profiles().schedule_checks(&schedule).await?;
        tx.commit().await?;
        total.members += report.members;
        total.granted += report.granted;
        total.removed += report.removed;
        total.failed_changes += report.failed_changes;
        total.rate_limited += report.rate_limited;
        total.deferred += report.deferred;
        // Over budget, another batch now would only be deferred as well:
        // the community's turn ends, the others' go on, and its deferred
        // members come up in the next pass.
        Ok(full && report.deferred == 0)
    }

    async fn check_profiles(
        &self,
        tenant: TenantId,
        guild: GuildId,
        profiles: Vec<Profile>,
        priority: CheckPriority,
        freshness: Freshness,
        reason: &str,
    ) -> Result<(CheckReport, HashSet<ProfileId>), SyncError> {
        // Read what we need, then let go of the connection while the chain
        // is read: no transaction waits on the network.
        let tx = self.store.begin(tenant).await?;
        let wanted: Vec<ProfileId> = profiles.iter().map(|p| p.id).collect();
        // One check per member at a time: a second concurrent check would
        // see the same difference and change the same role twice. The lease
        // re-reads the profiles, so a check queued behind another sees what
        // that one wrote (and any wallet linked meanwhile).
        let profiles = tx.profiles().lease_for_check(&wanted, CHECK_LEASE).await?;
        let rules = tx.rules().list_all().await?;
        let ids: Vec<ProfileId> = profiles.iter().map(|p| p.id).collect();
        let grants = tx.role_grants().for_profiles(&ids).await?;
        tx.commit().await?;

        let managed: Vec<&EligibilityRule> = rules.iter().filter(|r| r.enabled).collect();
        let mut report = CheckReport {
            members: profiles.len(),
            busy: wanted.len() - profiles.len(),
            ..CheckReport::default()
        };
        if managed.is_empty() {
            let tx = self.store.begin(tenant).await?;
            tx.profiles().release_check_lease(&ids).await?;
            tx.commit().await?;
            return Ok((report, HashSet::new()));
        }
        let rule_set = rule_set(&rules);
        let facts: Vec<MemberFacts> = profiles.iter().map(crate::members::facts).collect();
        let evaluations = self
            .evaluator
            .evaluate_many(*tenant.as_uuid(), &rule_set, &facts, freshness)
            .await;
        let deferred: HashSet<ProfileId> = profiles
            .iter()
            .zip(&evaluations)
            .filter(|(_, evaluation)| {
                evaluation.outcomes.iter().any(|o| {
                    matches!(
                        &o.outcome,
                        eligibility::Outcome::Unknown {
                            reason: eligibility::UnknownReason::Chain(
                                eligibility::ChainError::OverBudget { .. }
                            ),
                        }
                    )
                })
            })
            .map(|(p, _)| p.id)
            .collect();
        report.deferred = deferred.len();
        if !deferred.is_empty() {
            let priority = match priority {
                CheckPriority::Interactive => "interactive",
                CheckPriority::Bulk => "bulk",
            };
            metrics::counter!("role_sync_members_deferred_total", "reason" => "chain_budget", "priority" => priority)
                .increment(deferred.len() as u64);
        }
        // Outcomes a chain outage left undecided, by chain, for the sync
        // status (custom rules that depend on them are not counted twice).
        let mut undecided: BTreeMap<&str, usize> = BTreeMap::new();
        for evaluation in &evaluations {
            for outcome in &evaluation.outcomes {
                if let eligibility::Outcome::Unknown {
                    reason: eligibility::UnknownReason::Chain(_),
                } = outcome.outcome
                {
                    let chain = managed
                        .iter()
                        .find(|r| *r.id.as_uuid() == outcome.rule_id)
                        .and_then(|r| r.chain.as_deref());
                    if let Some(chain) = chain {
                        *undecided.entry(chain).or_default() += 1;
                    }
                }
            }
        }
        let previous: HashMap<(ProfileId, RuleId), &RoleGrant> = grants
            .iter()
            .map(|g| ((g.profile_id, g.rule_id), g))
            .collect();

        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX);
        let mut writes = Vec::new();
        for (profile, evaluation) in profiles.iter().zip(&evaluations) {
            let mut roles = profile.role_ids.clone();
            let mut grant_rows = Vec::new();
            let mut audits = Vec::new();
            for rule in &managed {
                let Some(decided) = evaluation.get(*rule.id.as_uuid()) else {
                    continue;
                };
                let role = rule.role_discord_id;
                let before = previous.get(&(profile.id, rule.id));
                let decision = decide(Inputs {
                    outcome: &decided.outcome,
                    holds_role: roles.contains(&role),
                    previous: before.map(|g| Previous {
                        eligible: g.eligible,
                        failing_since: g.failing_since,
                    }),
                    // Grace survives a wallet added, not one removed or
                    // moved to another member.
                    wallet_changed: before
                        .is_some_and(|g| g.wallets.iter().any(|w| !profile.wallets.contains(w))),
                    grace,
                    now,
                });
                let Some((eligible, failing_since)) = decision.record() else {
                    continue;
                };
                if let Some(add) = decision.role_change() {
                    let result = self
                        .discord
                        .change_role(
                            RoleChange {
                                guild_id: guild,
                                user_id: profile.discord_user_id,
                                role_id: role,
                                add,
                                reason: format!("Gatehouse rule {}: {}", rule.id, decided.detail),
                            },
                            priority,
                        )
                        .await;
                    match result {
                        Ok(()) => {
                            let action = if add {
                                roles.push(role);
                                report.granted += 1;
                                AuditAction::RoleGranted
                            } else {
                                roles.retain(|r| *r != role);
                                report.removed += 1;
                                AuditAction::RoleRemoved
                            };
                            audits.push(
                                Actor::System
                                    .entry(action)
                                    .target("profile", profile.id.to_string())
                                    .metadata(json!({
                                        "rule_id": rule.id,
                                        "role_id": role.to_string(),
                                        "discord_user_id": profile.discord_user_id.to_string(),
                                        "detail": decided.detail,
                                        "reason": reason,
                                    })),
                            );
                        }
                        Err(RoleChangeError::MemberGone { .. }) => {
                            // Left meanwhile; their member.leave closes the
                            // profile and no later check will try again.
                            tracing::info!(%guild, user = %profile.discord_user_id, "member left before a role change; skipped");
                            continue;
                        }
                        Err(e) => {
                            if matches!(e, RoleChangeError::RateLimited(_)) {
                                report.rate_limited += 1;
                            }
                            report.failed_changes += 1;
                            report.first_error.get_or_insert_with(|| e.to_string());
                            tracing::warn!(error = %e, "role change failed; the next check retries it");
                            // Record nothing for this rule: the next check
                            // sees the same difference and tries again.
                            continue;
                        }
                    }
                }
                grant_rows.push(RoleGrant {
                    profile_id: profile.id,
                    rule_id: rule.id,
                    role_discord_id: role,
                    eligible: Some(eligible),
                    failing_since,
                    detail: decided.detail.clone(),
                    checked_at: now,
                    wallets: profile.wallets.clone(),
                });
            }
            let roles_changed = roles != profile.role_ids;
            writes.push((
                profile.discord_user_id,
                roles_changed.then_some(roles),
                grant_rows,
                audits,
            ));
        }

        let tx = self.store.begin(tenant).await?;
        tx.profiles().release_check_lease(&ids).await?;
        let counters = tx.sync_counters();
        counters
            .add(SyncCounter::Discord429, "", saturate(report.rate_limited))
            .await?;
        for (chain, n) in &undecided {
            counters
                .add(SyncCounter::ChainUndecided, chain, saturate(*n))
                .await?;
        }
        for (user, roles, grant_rows, audits) in &writes {
            for grant in grant_rows {
                tx.role_grants().record(grant).await?;
            }
            if let Some(roles) = roles {
                tx.profiles().set_roles(*user, roles).await?;
            }
            for entry in audits {
                tx.audit().append(entry).await?;
            }
        }
        tx.commit().await?;
        Ok((report, deferred))
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
