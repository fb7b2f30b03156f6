//! A dry run of a rule change: which members would gain or lose which role
//! if the change were saved, before anything is saved or sent to Discord.
//!
//! The preview evaluates every present member twice, against the rules as
//! they are and as they would be, through the same [`Evaluator`] the
//! workers use (chain reads come from its cache when young enough, as in a
//! periodic re-check). A member counts as gaining a role when the new rules
//! would have the worker grant it and the current ones would not, and as
//! losing it likewise; changes the worker would make anyway (a member whose
//! balance moved since their last check) belong to neither rule set and are
//! left out. Losses take effect after the grace period, as they would.
//!
//! Members whose last check is older than the re-check period are counted
//! as stale: the preview is about their current chain state, but what
//! Discord shows for them may still follow an older one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eligibility::{Evaluator, Freshness, MemberEvaluation, MemberFacts, Outcome};
use store::repo::{EligibilityRule, MemberFilter, Profile};
use store::{RuleId, Store, WalletAddress};
use wire::{RoleId, UserId};

use crate::members::is_stale;
use crate::rules::{row_of, rule_set, users_of, NewRule, RuleError};
use crate::CommunityRef;

/// A change to preview.
#[derive(Clone, Debug)]
pub enum RuleChange {
    Create(NewRule),
    Update { id: RuleId, rule: NewRule },
    Enable(RuleId),
    Disable(RuleId),
    Delete(RuleId),
}

/// What the change would do to one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleEffect {
    pub role: RoleId,
    pub gain: u64,
    pub lose: u64,
    /// Members for whom the new rule could not be decided (a chain could
    /// not be read): they keep what they have until it can.
    pub undecided: u64,
    /// Up to the requested sample size, lowest user ids first.
    pub gain_sample: Vec<UserId>,
    pub lose_sample: Vec<UserId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// Present members evaluated.
    pub members: u64,
    /// Of those, members whose last check is older than the re-check period
    /// (or who were never checked).
    pub stale: u64,
    /// Roles the change affects (granted by a rule it touches), by role id.
    pub roles: Vec<RoleEffect>,
    pub evaluated_at: DateTime<Utc>,
}

/// Members are evaluated this many at a time: one chain batch each.
const CHUNK: usize = 500;

pub async fn preview(
    store: &Store,
    evaluator: &Evaluator,
    community: CommunityRef,
    change: &RuleChange,
    recheck_period: Duration,
    sample: usize,
) -> Result<Preview, RuleError> {
    let tx = store.begin(community.tenant).await?;
    let current = tx.rules().list_all().await?;
    let mut members: Vec<Profile> = Vec::new();
    loop {
        let page = tx
            .profiles()
            .search(&MemberFilter {
                after: members.last().map(|p| p.discord_user_id),
                present: Some(true),
                limit: 5_000,
                ..MemberFilter::default()
            })
            .await?;
        let done = page.len() < 5_000;
        members.extend(page);
        if done {
            break;
        }
    }
    let mut last_checked: BTreeMap<store::ProfileId, DateTime<Utc>> = BTreeMap::new();
    for chunk in members.chunks(CHUNK) {
        let ids: Vec<_> = chunk.iter().map(|p| p.id).collect();
        for grant in tx.role_grants().for_profiles(&ids).await? {
            let at = last_checked
                .entry(grant.profile_id)
                .or_insert(grant.checked_at);
            *at = (*at).max(grant.checked_at);
        }
    }
    tx.commit().await?;

    let proposed = apply(&current, change, community)?;
    let touched = touched_roles(&current, &proposed);
    let now = Utc::now();
    let stale = members
        .iter()
        .filter(|p| is_stale(last_checked.get(&p.id).copied(), recheck_period, now))
        .count() as u64;

    let (old_set, new_set) = (rule_set(&current), rule_set(&proposed));
    let mut effects: BTreeMap<RoleId, RoleEffect> = touched
        .iter()
        .map(|&role| {
            (
                role,
                RoleEffect {
                    role,
                    gain: 0,
                    lose: 0,
                    undecided: 0,
                    gain_sample: Vec::new(),
                    lose_sample: Vec::new(),
                },
            )
        })
        .collect();
    for chunk in members.chunks(CHUNK) {
        let facts: Vec<MemberFacts> = chunk.iter().map(facts_of).collect();
        let before = evaluator
            .evaluate_many(
                *community.tenant.as_uuid(),
                &old_set,
                &facts,
                Freshness::Cached,
            )
            .await;
        let after = evaluator
            .evaluate_many(
                *community.tenant.as_uuid(),
                &new_set,
                &facts,
                Freshness::Cached,
            )
            .await;
        for ((member, before), after) in chunk.iter().zip(&before).zip(&after) {
            for effect in effects.values_mut() {
                let was = worker_action(&current, before, member, effect.role);
                let will = worker_action(&proposed, after, member, effect.role);
                match will {
                    Action::Undecided => effect.undecided += 1,
                    _ if will == was => {}
                    Action::Grant => {
                        effect.gain += 1;
                        if effect.gain_sample.len() < sample {
                            effect.gain_sample.push(member.discord_user_id);
                        }
                    }
                    Action::Remove => {
                        effect.lose += 1;
                        if effect.lose_sample.len() < sample {
                            effect.lose_sample.push(member.discord_user_id);
                        }
                    }
                    Action::Nothing => {}
                }
            }
        }
    }
    Ok(Preview {
        members: members.len() as u64,
        stale,
        roles: effects.into_values().collect(),
        evaluated_at: now,
    })
}

/// The community's rules as they would be after `change`. Validates the
/// change as saving it would (references, a delete still in use).
fn apply(
    current: &[EligibilityRule],
    change: &RuleChange,
    community: CommunityRef,
) -> Result<Vec<EligibilityRule>, RuleError> {
    let mut rules = current.to_vec();
    let find = |rules: &mut Vec<EligibilityRule>, id: RuleId| {
        rules
            .iter()
            .position(|r| r.id == id)
            .ok_or(RuleError::NotFound(id))
    };
    let changed = match change {
        RuleChange::Create(rule) => {
            let id = RuleId::from(uuid::Uuid::new_v4());
            rules.push(in_memory(id, rule, community, true)?);
            Some(id)
        }
        RuleChange::Update { id, rule } => {
            let i = find(&mut rules, *id)?;
            let enabled = rules[i].enabled;
            rules[i] = in_memory(*id, rule, community, enabled)?;
            Some(*id)
        }
        RuleChange::Enable(id) | RuleChange::Disable(id) => {
            let i = find(&mut rules, *id)?;
            rules[i].enabled = matches!(change, RuleChange::Enable(_));
            None
        }
        RuleChange::Delete(id) => {
            let i = find(&mut rules, *id)?;
            let users = users_of(current, *id);
            if !users.is_empty() {
                return Err(RuleError::InUse {
                    rule: *id,
                    users: users.into_iter().collect(),
                });
            }
            rules.remove(i);
            None
        }
    };
    if let Some(id) = changed {
        if let Some(role) = rules.iter().find(|r| r.id == id).map(|r| r.role_discord_id) {
            if rules
                .iter()
                .any(|r| r.id != id && r.role_discord_id == role)
            {
                return Err(RuleError::RoleTaken(role));
            }
        }
        if let Some(problem) = rule_set(&rules)
            .problems()
            .into_iter()
            .find(|p| p.rule == *id.as_uuid())
        {
            return Err(RuleError::BadReference {
                reason: problem.reason.to_string(),
            });
        }
    }
    Ok(rules)
}

fn in_memory(
    id: RuleId,
    rule: &NewRule,
    community: CommunityRef,
    enabled: bool,
) -> Result<EligibilityRule, RuleError> {
    let row = row_of(rule)?;
    let now = Utc::now();
    Ok(EligibilityRule {
        id,
        community_id: community.tenant,
        chain: row.chain,
        contract_address: row.contract_address,
        rule_type: row.rule_type,
        parameters: row.parameters,
        role_discord_id: row.role_discord_id,
        tier_mapping: row.tier_mapping,
        priority: row.priority,
        enabled,
        created_at: now,
        updated_at: now,
    })
}

/// Roles whose managing rule differs between the two rule sets (added,
/// removed, changed or toggled), plus roles of custom rules that use a
/// changed rule.
fn touched_roles(current: &[EligibilityRule], proposed: &[EligibilityRule]) -> BTreeSet<RoleId> {
    let key = |r: &EligibilityRule| {
        (
            r.id,
            r.role_discord_id,
            r.enabled,
            r.rule_type,
            r.chain.clone(),
            r.contract_address
                .as_ref()
                .map(WalletAddress::as_str)
                .map(str::to_owned),
            r.parameters.clone(),
        )
    };
    let before: BTreeMap<RuleId, _> = current.iter().map(|r| (r.id, key(r))).collect();
    let after: BTreeMap<RuleId, _> = proposed.iter().map(|r| (r.id, key(r))).collect();
    let mut changed: BTreeSet<RuleId> = before
        .keys()
        .chain(after.keys())
        .filter(|id| before.get(id) != after.get(id))
        .copied()
        .collect();
    // A custom rule's outcome moves with the rules it combines.
    loop {
        let more: Vec<RuleId> = proposed
            .iter()
            .filter(|r| !changed.contains(&r.id))
            .filter(|r| {
                rule_set(std::slice::from_ref(*r))
                    .rules()
                    .first()
                    .is_some_and(|d| {
                        d.spec
                            .references()
                            .iter()
                            .any(|u| changed.contains(&RuleId::from(*u)))
                    })
            })
            .map(|r| r.id)
            .collect();
        if more.is_empty() {
            break;
        }
        changed.extend(more);
    }
    current
        .iter()
        .chain(proposed)
        .filter(|r| changed.contains(&r.id))
        .map(|r| r.role_discord_id)
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Grant,
    Remove,
    Nothing,
    Undecided,
}

/// What the worker would do about `role` for this member under `rules`.
fn worker_action(
    rules: &[EligibilityRule],
    evaluation: &MemberEvaluation,
    member: &Profile,
    role: RoleId,
) -> Action {
    let Some(rule) = rules
        .iter()
        .find(|r| r.enabled && r.role_discord_id == role)
    else {
        // Unmanaged: the worker leaves the role alone.
        return Action::Nothing;
    };
    let holds = member.role_ids.contains(&role);
    match evaluation.get(*rule.id.as_uuid()).map(|o| &o.outcome) {
        Some(Outcome::Eligible) if !holds => Action::Grant,
        Some(Outcome::NotEligible) if holds => Action::Remove,
        Some(Outcome::Unknown { .. }) | None => Action::Undecided,
        Some(_) => Action::Nothing,
    }
}

fn facts_of(profile: &Profile) -> MemberFacts {
    crate::members::facts(profile)
}
