//! A community's eligibility rules: create, list, enable, disable, delete.
//!
//! Every change is validated before it commits — the rule itself by
//! [`RuleSpec`] (each bad field named), a custom rule's references against
//! the community's rules inside the transaction that writes it, and a
//! delete refused while a custom rule still uses the rule — then audited
//! and followed by a community-wide re-check, so members' roles follow the
//! rules. These functions own their transaction because the re-check may
//! only be requested once the change is visible to the workers.

use std::collections::BTreeSet;

use eligibility::{RuleDef, RuleSet, RuleSpec};
use serde_json::json;
use store::{
    repo::{EligibilityRule, NewRule as NewRuleRow, RuleType},
    RuleId, Store, StoreError, TenantTx, WalletAddress,
};
use uuid::Uuid;
use wire::RoleId;

use crate::{
    community::CommunityRef,
    recheck::{community_recheck, RecheckError, Rechecks},
    Actor, AuditAction,
};

/// A rule to create: the role it grants and a validated [`RuleSpec`].
#[derive(Clone, Debug)]
pub struct NewRule {
    pub role: RoleId,
    pub spec: RuleSpec,
    /// Higher first when rules are listed; no effect on evaluation.
    pub priority: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A custom rule names a rule that is not one of this community's.
    #[error("the rule is invalid: parameters.rules {reason}; nothing was stored")]
    BadReference { reason: String },
    #[error("no rule {0} in this community")]
    NotFound(RuleId),
    /// One role, one deciding rule.
    #[error("another rule already grants role {0}: change or delete that rule first")]
    RoleTaken(RoleId),
    #[error("rule {rule} is used by custom rule {}: change or delete that first; nothing was deleted", join(.users))]
    InUse { rule: RuleId, users: Vec<RuleId> },
    /// The change is committed; only the re-check request failed. The
    /// periodic re-check still reaches every member within its period.
    #[error("the change was saved, but {0}; members are re-checked by the periodic scan instead")]
    Recheck(#[source] RecheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(ids: &[RuleId]) -> String {
    ids.iter()
        .map(RuleId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`set_enabled`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Toggled {
    pub rule: EligibilityRule,
    /// False when the rule already was in the requested state (nothing was
    /// written, audited or re-checked).
    pub changed: bool,
}

/// The community's rules, highest priority first.
pub async fn list(
    store: &Store,
    community: CommunityRef,
) -> Result<Vec<EligibilityRule>, RuleError> {
    let tx = store.begin(community.tenant).await?;
    let rules = tx.rules().list_all().await?;
    tx.commit().await?;
    Ok(rules)
}

/// Creates a rule, audits it and requests a community re-check.
pub async fn create(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    rule: &NewRule,
) -> Result<EligibilityRule, RuleError> {
    let row = row_of(rule)?;
    let tx = store.begin(community.tenant).await?;
    let created = tx.rules().create(&row).await?;
    // A custom rule's references can only be checked against the
    // community's rules, inside the transaction that adds it.
    let all = tx.rules().list_all().await?;
    if let Some(problem) = rule_set(&all)
        .problems()
        .into_iter()
        .find(|p| p.rule == *created.id.as_uuid())
    {
        // Dropping the transaction rolls the insert back.
        return Err(RuleError::BadReference {
            reason: problem.reason.to_string(),
        });
    }
    audit(&tx, actor, AuditAction::RuleCreated, &created).await?;
    tx.commit().await?;
    let check = community_recheck(
        community.guild,
        format!("rule:{}:created", created.id),
        "rule.changed",
    );
    rechecks.request(&check).await.map_err(RuleError::Recheck)?;
    Ok(created)
}

/// Replaces what a rule checks, the role it grants and its priority,
/// keeping its id (custom rules that use it keep working) and whether it
/// is enabled; audited with the before and after, then re-checked.
pub async fn update(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    id: RuleId,
    rule: &NewRule,
) -> Result<EligibilityRule, RuleError> {
    let row = row_of(rule)?;
    let tx = store.begin(community.tenant).await?;
    let before = tx
        .rules()
        .list_all()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(RuleError::NotFound(id))?;
    let updated = tx
        .rules()
        .update(id, &row)
        .await?
        .ok_or(RuleError::NotFound(id))?;
    let all = tx.rules().list_all().await?;
    if let Some(problem) = rule_set(&all)
        .problems()
        .into_iter()
        .find(|p| p.rule == *id.as_uuid())
    {
        return Err(RuleError::BadReference {
            reason: problem.reason.to_string(),
        });
    }
    let entry = actor
        .entry(AuditAction::RuleUpdated)
        .target("eligibility_rule", id.to_string())
        .metadata(json!({
            "rule_type": updated.rule_type.as_str(),
            "role_id": updated.role_discord_id.to_string(),
            "before": { "rule_type": before.rule_type.as_str(), "chain": before.chain,
                        "parameters": before.parameters, "role_id": before.role_discord_id.to_string() },
            "after": { "rule_type": updated.rule_type.as_str(), "chain": updated.chain,
                       "parameters": updated.parameters, "role_id": updated.role_discord_id.to_string() },
        }));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    request_after_change(rechecks, community, id, "updated").await?;
    Ok(updated)
}

/// The stored form of a validated rule.
pub(crate) fn row_of(rule: &NewRule) -> Result<NewRuleRow, RuleError> {
    let columns = rule.spec.to_columns();
    let rule_type: RuleType = columns.rule_type.parse()?;
    // RuleSpec has already checked the address; this only changes its type.
    let contract = columns
        .contract_address
        .as_deref()
        .map(WalletAddress::parse)
        .transpose()
        .map_err(|e| RuleError::BadReference {
            reason: format!("contract: {e}"),
        })?;
    Ok(NewRuleRow {
        chain: columns.chain,
        contract_address: contract,
        rule_type,
        parameters: columns.parameters,
        role_discord_id: rule.role,
        tier_mapping: None,
        priority: rule.priority,
        enabled: true,
    })
}

/// Lets a rule grant and remove its role (`enabled`), or stops it: members
/// keep the role they hold, and a custom rule that uses it still evaluates
/// it.
pub async fn set_enabled(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    id: RuleId,
    enabled: bool,
) -> Result<Toggled, RuleError> {
    let tx = store.begin(community.tenant).await?;
    let all = tx.rules().list_all().await?;
    let rule = all
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(RuleError::NotFound(id))?;
    if rule.enabled == enabled {
        tx.commit().await?;
        return Ok(Toggled {
            rule,
            changed: false,
        });
    }
    let rule = tx
        .rules()
        .set_enabled(id, enabled)
        .await?
        .ok_or(RuleError::NotFound(id))?;
    let (action, past) = if enabled {
        (AuditAction::RuleEnabled, "enabled")
    } else {
        (AuditAction::RuleDisabled, "disabled")
    };
    audit(&tx, actor, action, &rule).await?;
    tx.commit().await?;
    request_after_change(rechecks, community, id, past).await?;
    Ok(Toggled {
        rule,
        changed: true,
    })
}

/// Deletes a rule, unless a custom rule uses it. Members keep the role it
/// granted: it is simply no longer managed by Gatehouse.
pub async fn delete(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    id: RuleId,
) -> Result<EligibilityRule, RuleError> {
    let tx = store.begin(community.tenant).await?;
    let all = tx.rules().list_all().await?;
    let rule = all
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .ok_or(RuleError::NotFound(id))?;
    let users = users_of(&all, id);
    if !users.is_empty() {
        return Err(RuleError::InUse {
            rule: id,
            users: users.into_iter().collect(),
        });
    }
    tx.rules().delete(id).await?;
    audit(&tx, actor, AuditAction::RuleDeleted, &rule).await?;
    tx.commit().await?;
    request_after_change(rechecks, community, id, "deleted").await?;
    Ok(rule)
}

/// A community's stored rules as the evaluator sees them. A row that no
/// longer validates (written by an older version, or by hand) decides
/// nothing and is logged, rather than failing the whole community.
pub fn rule_set(rules: &[EligibilityRule]) -> RuleSet {
    RuleSet::new(rules.iter().filter_map(|r| {
        RuleDef::parse(
            *r.id.as_uuid(),
            r.enabled,
            r.rule_type.as_str(),
            r.chain.as_deref(),
            r.contract_address.as_ref().map(WalletAddress::as_str),
            &r.parameters,
        )
        .map_err(|e| tracing::warn!(rule = %r.id, error = %e, "stored rule no longer validates; it decides nothing"))
        .ok()
    }))
}

/// The custom rules that would lose a reference if `id` went away.
pub(crate) fn users_of(all: &[EligibilityRule], id: RuleId) -> BTreeSet<RuleId> {
    let broken = |rules: &[EligibilityRule]| -> BTreeSet<RuleId> {
        rule_set(rules)
            .problems()
            .into_iter()
            .map(|p| RuleId::from(p.rule))
            .collect()
    };
    let before = broken(all);
    let without: Vec<EligibilityRule> = all.iter().filter(|r| r.id != id).cloned().collect();
    broken(&without).difference(&before).copied().collect()
}

async fn audit(
    tx: &TenantTx,
    actor: &Actor,
    action: AuditAction,
    rule: &EligibilityRule,
) -> Result<(), StoreError> {
    let entry = actor
        .entry(action)
        .target("eligibility_rule", rule.id.to_string())
        .metadata(json!({
            "rule_type": rule.rule_type.as_str(),
            "role_id": rule.role_discord_id.to_string(),
        }));
    tx.audit().append(&entry).await?;
    Ok(())
}

async fn request_after_change(
    rechecks: &impl Rechecks,
    community: CommunityRef,
    id: RuleId,
    past: &str,
) -> Result<(), RuleError> {
    // Unique per change: enabling, disabling and enabling again within the
    // bus's duplicate window are three re-checks, not one.
    let check = community_recheck(
        community.guild,
        format!("rule:{id}:{past}:{}", Uuid::new_v4()),
        "rule.changed",
    );
    rechecks.request(&check).await.map_err(RuleError::Recheck)
}
