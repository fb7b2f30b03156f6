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
    repo::{EligibilityRule, NextCheck, Profile, RoleGrant, SyncCounter},
    ProfileId, RuleId, Store, StoreError, TenantId,
};
use tokio_util::sync::CancellationToken;
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
    /// Badges newly awarded (a check of named members and a periodic
    /// scan's claim evaluate their badges too).
    pub badges_awarded: usize,
    /// The first failure, for the retry/dead-letter reason.
    pub first_error: Option<String>,
    /// Members skipped because another check of theirs was in progress.
    pub busy: usize,
    /// Role changes Discord refused with 429 (also in `failed_changes`).
    pub rate_limited: usize,
    /// Members left unchecked because the check was asked to stop (the
    /// worker is shutting down): nothing recorded for them, their leases
    /// given back, so that the check can be asked again elsewhere.
    pub interrupted: usize,
    /// Communities a periodic scan could not check this pass.
    pub failed_communities: usize,
    /// Members left undecided on some rule because their community's
    /// chain-read budget was spent: they are due again (the periodic
    /// scan's next pass) rather than a whole period on.
    pub deferred: usize,
}

impl CheckReport {
    /// Counts `other`'s work in as well (the first error stays first).
    fn add(&mut self, other: &CheckReport) {
        self.members += other.members;
        self.granted += other.granted;
        self.removed += other.removed;
        self.failed_changes += other.failed_changes;
        self.badges_awarded += other.badges_awarded;
        self.busy += other.busy;
        self.rate_limited += other.rate_limited;
        self.interrupted += other.interrupted;
        self.failed_communities += other.failed_communities;
        self.deferred += other.deferred;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The members a batch of checks is for.
#[derive(Clone, Copy)]
enum Wanted<'a> {
    /// Profiles the caller has read (the periodic scan's claim).
    Profiles(&'a [ProfileId]),
    /// Members by Discord user (a request): their profiles are read and
    /// leased in the check's first round trip, and members without one, or
    /// who left, are nobody to sync.
    Users(&'a [UserId]),
}

/// What a batch of checks did, and which members it left undecided.
struct Checked {
    report: CheckReport,
    /// The wanted members' profiles, as found (present members only, when
    /// wanted by user).
    found: Vec<Profile>,
    /// Undecided on some rule: the community's chain-read budget was spent.
    deferred: HashSet<ProfileId>,
    /// Not checked: another check holds them.
    busy: Vec<ProfileId>,
    /// Checked through: every rule decided and every role change made. Their
    /// next check was scheduled a period on with the decisions.
    completed: HashSet<ProfileId>,
}

/// Pauses before a batch of checks tries again the members it found held
/// by another check (about a second in all).
const BUSY_RETRIES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(300),
    Duration::from_millis(500),
];

/// What a check does with members another check holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Report them (the caller waits and asks again).
    Report,
    /// Make them due for the periodic scan.
    MarkDue,
}

/// How long a check may hold a member before another may take over (a
/// crashed worker's lease expires by itself).
const CHECK_LEASE: Duration = Duration::from_secs(60);

/// How long after joining a new member waits for the check their join asks
/// for before the periodic scan takes them instead: the scan is the net for
/// a check that was never asked (a publish that failed, a worker that died),
/// not a second check of every joiner. Taking them at once, it checked
/// every member who joined since its last pass, and made their own checks
/// find them held and try again.
pub const FIRST_CHECK_WAIT: Duration = CHECK_LEASE;

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
            // Checks and scans follow the membership events they are about:
            // under load they wait for connections rather than delay them.
            store: store.background(),
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

    /// Checks one member now. A member another check holds is reported
    /// `busy` and left alone (`/check` waits for that check instead).
    pub async fn check_member(
        &self,
        tenant: TenantId,
        guild: GuildId,
        user: UserId,
        priority: CheckPriority,
        reason: &str,
    ) -> Result<CheckReport, SyncError> {
        self.check_users(tenant, guild, &[user], priority, reason, Busy::Report, None)
            .await
    }

    /// Checks several members of one community now, as one batch: one read
    /// of their profiles, rules and grants, one round of chain reads, one
    /// write of the decisions — where one member at a time costs a few
    /// transactions each. A member checked through has their next check
    /// scheduled a period on with the decisions, as the periodic scan
    /// would: the scan does not check a joiner a second time. Members
    /// another check holds are made due, so the periodic scan checks them
    /// once that check lets go (it may have read their state before this
    /// request's news: a linked wallet, a balance change) without this
    /// request waiting meanwhile.
    ///
    /// A batch's role changes wait on Discord's limits one after another,
    /// which can take a while; once `stop` is cancelled no further change
    /// starts, and the members not yet done are left (`interrupted`) for
    /// the check to be asked again, instead of holding up a shutdown.
    pub async fn check_members(
        &self,
        tenant: TenantId,
        guild: GuildId,
        users: &[UserId],
        priority: CheckPriority,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<CheckReport, SyncError> {
        self.check_users(
            tenant,
            guild,
            users,
            priority,
            reason,
            Busy::MarkDue,
            Some(stop),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn check_users(
        &self,
        tenant: TenantId,
        guild: GuildId,
        users: &[UserId],
        priority: CheckPriority,
        reason: &str,
        busy: Busy,
        stop: Option<&CancellationToken>,
    ) -> Result<CheckReport, SyncError> {
        let freshness = match priority {
            // A member is waiting on this answer: read the chain unless a
            // read is only moments old.
            CheckPriority::Interactive => Freshness::NotOlderThan(self.config.check_min_read_age),
            CheckPriority::Bulk => Freshness::Cached,
        };
        let mut checked = self
            .check_profiles(
                tenant,
                guild,
                Wanted::Users(users),
                priority,
                freshness,
                reason,
                stop,
            )
            .await?;
        // Not (or no longer) members: nothing to sync.
        let users_of: HashMap<ProfileId, UserId> = checked
            .found
            .iter()
            .map(|p| (p.id, p.discord_user_id))
            .collect();
        let mut report = checked.report.clone();
        if busy == Busy::MarkDue {
            // Most members found busy are held only for moments (a batch of
            // membership events, the scan claiming them, the check before
            // this one): check them again shortly rather than hand them to
            // a scan that may find them held in turn.
            for pause in BUSY_RETRIES {
                if checked.busy.is_empty() || stop.is_some_and(CancellationToken::is_cancelled) {
                    break;
                }
                tokio::time::sleep(pause).await;
                let again: Vec<UserId> = checked
                    .busy
                    .iter()
                    .filter_map(|id| users_of.get(id).copied())
                    .collect();
                let deferred = std::mem::take(&mut checked.deferred);
                checked = self
                    .check_profiles(
                        tenant,
                        guild,
                        Wanted::Users(&again),
                        priority,
                        freshness,
                        reason,
                        stop,
                    )
                    .await?;
                checked.deferred.extend(deferred);
                report.add(&checked.report);
            }
            report.busy = checked.busy.len();
        }
        // The community's budget could not pay for all their reads: the
        // periodic scan picks them up next, with budget refilled, instead of
        // leaving them undecided for a period. So are members still held by
        // another check, which may have read them before this request's
        // news (a linked wallet, a balance change).
        let mut due: Vec<UserId> = checked
            .deferred
            .iter()
            .filter_map(|id| users_of.get(id).copied())
            .collect();
        if busy == Busy::MarkDue {
            due.extend(
                checked
                    .busy
                    .iter()
                    .filter_map(|id| users_of.get(id).copied()),
            );
        }
        if !due.is_empty() {
            let tx = self.store.begin(tenant).await?;
            tx.profiles().mark_members_due(&due).await?;
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
        let claimed: Vec<ProfileId> = due.iter().map(|p| p.id).collect();
        let Checked {
            report,
            deferred,
            busy,
            completed,
            ..
        } = self
            .check_profiles(
                tenant,
                guild,
                Wanted::Profiles(&claimed),
                CheckPriority::Bulk,
                Freshness::Cached,
                "periodic",
                None,
            )
            .await?;
        // Checked through: the next look is a period on, scheduled with the
        // decisions (and left alone if the member was made due meanwhile).
        // Checked but not through (a role change failed, a chain could not
        // be read): a period on as well. Members the community's
        // chain-read budget left undecided are due again at once instead,
        // for the next pass. Members another check held are looked at again
        // once its lease would have run out, not a period on: that check
        // may have read them before the news that made them due, or been
        // cut off with its worker, and a check that found them held by this
        // scan may have left them to it.
        let busy: HashSet<ProfileId> = busy.into_iter().collect();
        let lease_over = now + chrono::Duration::from_std(CHECK_LEASE).unwrap_or_default();
        let schedule: Vec<(ProfileId, DateTime<Utc>)> = schedule
            .into_iter()
            .filter(|(id, _)| !completed.contains(id))
            .map(|(id, next)| {
                if deferred.contains(&id) {
                    (id, now)
                } else if busy.contains(&id) {
                    (id, lease_over.min(next))
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

    #[allow(clippy::too_many_arguments)]
    async fn check_profiles(
        &self,
        tenant: TenantId,
        guild: GuildId,
        wanted: Wanted<'_>,
        priority: CheckPriority,
        freshness: Freshness,
        reason: &str,
        stop: Option<&CancellationToken>,
    ) -> Result<Checked, SyncError> {
        // Read what we need, then let go of the connection while the chain
        // is read: no transaction waits on the network.
        let tx = self.store.begin(tenant).await?;
        let (store_profiles, store_rules, store_badges) = (tx.profiles(), tx.rules(), tx.badges());
        // One check per member at a time: a second concurrent check would
        // see the same difference and change the same role twice. The lease
        // re-reads the profiles, so a check queued behind another sees what
        // that one wrote (and any wallet linked meanwhile). The lease and
        // the rules go out together, in one round trip (with the badges
        // when members are named, see below); so do the grants and, for
        // members the lease did not take, their profiles.
        let (profiles, rules, badges) = match wanted {
            Wanted::Profiles(ids) => {
                let (profiles, rules) = tokio::try_join!(
                    store_profiles.lease_for_check(ids, CHECK_LEASE),
                    store_rules.list_all(),
                )?;
                (profiles, rules, None)
            }
            Wanted::Users(users) => {
                let (profiles, rules, badges) = tokio::try_join!(
                    store_profiles.lease_members_for_check(users, CHECK_LEASE),
                    store_rules.list_all(),
                    store_badges.list(),
                )?;
                (profiles, rules, Some(badges))
            }
        };
        let ids: Vec<ProfileId> = profiles.iter().map(|p| p.id).collect();
        // Members the lease did not take are held by another check, gone,
        // or never were here: only those are looked up, which most checks
        // (everyone leased) never need.
        let not_leased: Vec<UserId> = match wanted {
            Wanted::Profiles(_) => Vec::new(),
            Wanted::Users(users) => {
                let leased: HashSet<UserId> = profiles.iter().map(|p| p.discord_user_id).collect();
                users
                    .iter()
                    .filter(|u| !leased.contains(u))
                    .copied()
                    .collect()
            }
        };
        let store_grants = tx.role_grants();
        let (grants, others) = tokio::try_join!(
            async {
                if ids.is_empty() {
                    Ok(Vec::new())
                } else {
                    store_grants.for_profiles(&ids).await
                }
            },
            async {
                if not_leased.is_empty() {
                    Ok(Vec::new())
                } else {
                    store_profiles.find_by_discord_users(&not_leased).await
                }
            },
        )?;
        // Not (or no longer) members: nobody to sync.
        let found: Vec<Profile> = match wanted {
            Wanted::Profiles(_) => Vec::new(),
            Wanted::Users(_) => profiles
                .iter()
                .cloned()
                .chain(others.into_iter().filter(|p| p.left_at.is_none()))
                .collect(),
        };
        // Named members' badges ride on their lease, which holds their rows,
        // as the scan's do on its claim: a batch of joins (whose check names
        // its members) then costs no transaction of its own for its badges.
        // The scan's claim evaluated those of the profiles it hands here.
        let awarded = match badges {
            Some(badges) if !profiles.is_empty() => {
                crate::badges::evaluate_held(&tx, badges, &profiles, Utc::now()).await?
            }
            _ => Vec::new(),
        };
        tx.commit().await?;

        let leased: HashSet<ProfileId> = ids.iter().copied().collect();
        let wanted: Vec<ProfileId> = match wanted {
            Wanted::Profiles(ids) => ids.to_vec(),
            Wanted::Users(_) => found.iter().map(|p| p.id).collect(),
        };
        let busy: Vec<ProfileId> = wanted
            .into_iter()
            .filter(|id| !leased.contains(id))
            .collect();
        let mut report = CheckReport {
            members: profiles.len(),
            busy: busy.len(),
            badges_awarded: awarded.len(),
            ..CheckReport::default()
        };
        if profiles.is_empty() {
            // Nobody to check now: nothing to write either.
            return Ok(Checked {
                report,
                found,
                deferred: HashSet::new(),
                busy,
                completed: HashSet::new(),
            });
        }
        let managed: Vec<&EligibilityRule> = rules.iter().filter(|r| r.enabled).collect();
        if managed.is_empty() {
            // Nothing to decide: checked through.
            let now = Utc::now();
            let next: Vec<NextCheck> = profiles
                .iter()
                .map(|p| self.next_check(tenant, p, now))
                .collect();
            let tx = self.store.begin(tenant).await?;
            tx.profiles().finish_checks(&ids, &next).await?;
            tx.commit().await?;
            return Ok(Checked {
                report,
                found,
                deferred: HashSet::new(),
                busy,
                completed: leased,
            });
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
        let mut completed = Vec::new();
        'members: for (profile, evaluation) in profiles.iter().zip(&evaluations) {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                report.interrupted += 1;
                continue;
            }
            let mut roles = profile.role_ids.clone();
            let mut grant_rows = Vec::new();
            let mut audits = Vec::new();
            // A chain that could not be read leaves the member to be
            // checked again soon, as does a role change that failed.
            let mut through = !deferred.contains(&profile.id)
                && !evaluation.outcomes.iter().any(|o| {
                    matches!(
                        o.outcome,
                        eligibility::Outcome::Unknown {
                            reason: eligibility::UnknownReason::Chain(_),
                        }
                    )
                });
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
                    let change = self.discord.change_role(
                        RoleChange {
                            guild_id: guild,
                            user_id: profile.discord_user_id,
                            role_id: role,
                            add,
                            reason: format!("Gatehouse rule {}: {}", rule.id, decided.detail),
                        },
                        priority,
                    );
                    // A change waiting on Discord's limits is given up when
                    // asked to stop; one already sent may still land, and
                    // the next check finds it (role changes are idempotent).
                    let result = match stop {
                        Some(stop) => tokio::select! {
                            result = change => result,
                            () = stop.cancelled() => {
                                report.interrupted += 1;
                                continue 'members;
                            }
                        },
                        None => change.await,
                    };
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
                            through = false;
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
            if through {
                completed.push(self.next_check(tenant, profile, now));
            }
            writes.push(Decided {
                user: profile.discord_user_id,
                roles: roles_changed.then_some(roles),
                grants: grant_rows,
                audits,
            });
        }

        if let Err(e) = self
            .write_decisions(tenant, &ids, &completed, &report, &undecided, writes)
            .await
        {
            // The decisions are lost with the transaction (the next check
            // makes them again), but the members need not wait out the
            // lease for it: give it back if the database lets us.
            if let Ok(tx) = self.store.begin(tenant).await {
                if tx.profiles().release_check_lease(&ids).await.is_ok() {
                    let _ = tx.commit().await;
                }
            }
            return Err(e.into());
        }
        Ok(Checked {
            report,
            found,
            deferred,
            busy,
            completed: completed.iter().map(|n| n.profile_id).collect(),
        })
    }

    /// A member's next check a period on, to be written when `profile`'s
    /// check commits.
    fn next_check(&self, tenant: TenantId, profile: &Profile, now: DateTime<Utc>) -> NextCheck {
        NextCheck {
            profile_id: profile.id,
            seen: profile.next_check_at,
            at: next_check(
                tenant,
                profile.discord_user_id,
                self.config.recheck_period,
                now,
            ),
        }
    }

    /// Gives the leases back, schedules the next check of the members
    /// checked through and writes a batch's decisions, in a few statements
    /// rather than a few per member: grants and audit entries set-based,
    /// role snapshots (only members whose roles changed) pipelined on the
    /// one connection.
    async fn write_decisions(
        &self,
        tenant: TenantId,
        leased: &[ProfileId],
        next: &[NextCheck],
        report: &CheckReport,
        undecided: &BTreeMap<&str, usize>,
        mut writes: Vec<Decided>,
    ) -> Result<(), StoreError> {
        let tx = self.store.begin(tenant).await?;
        tx.profiles().finish_checks(leased, next).await?;
        let counters = tx.sync_counters();
        counters
            .add(SyncCounter::Discord429, "", saturate(report.rate_limited))
            .await?;
        for (chain, n) in undecided {
            counters
                .add(SyncCounter::ChainUndecided, chain, saturate(*n))
                .await?;
        }
        let grants: Vec<RoleGrant> = writes
            .iter_mut()
            .flat_map(|d| std::mem::take(&mut d.grants))
            .collect();
        tx.role_grants().record_many(&grants).await?;
        let snapshots: Vec<(UserId, &[RoleId])> = writes
            .iter()
            .filter_map(|d| Some((d.user, d.roles.as_deref()?)))
            .collect();
        tx.profiles().set_roles_many(&snapshots).await?;
        let entries: Vec<store::repo::AuditEntry> =
            writes.into_iter().flat_map(|d| d.audits).collect();
        tx.audit().append_many(&entries).await?;
        tx.commit().await
    }
}

/// What a check decided for one member, to be written.
struct Decided {
    user: UserId,
    /// The member's roles, if Gatehouse changed them.
    roles: Option<Vec<RoleId>>,
    grants: Vec<RoleGrant>,
    audits: Vec<store::repo::AuditEntry>,
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
