//! Members as an admin sees them: who is here, what they hold and why.

use chrono::{DateTime, Utc};
use serde_json::json;
use store::repo::{BadgeAward, EligibilityRule, MemberFilter, Profile, RoleGrant};
use store::{Store, StoreError};
use wire::check::EligibilityCheck;
use wire::UserId;

use crate::recheck::{RecheckError, Rechecks};
use crate::{Actor, AuditAction, CommunityRef};

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("no member {0} in this community")]
    NotFound(UserId),
    #[error(transparent)]
    Recheck(#[from] RecheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One rule's last word on a member.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleStanding {
    pub rule: EligibilityRule,
    /// `None` until the rule was first decided for this member.
    pub grant: Option<RoleGrant>,
}

impl RuleStanding {
    /// Whether the last decision is older than the re-check period, so may
    /// no longer describe the chain.
    pub fn is_stale(&self, recheck_period: std::time::Duration, now: DateTime<Utc>) -> bool {
        is_stale(
            self.grant.as_ref().map(|g| g.checked_at),
            recheck_period,
            now,
        )
    }
}

/// Each rule with the member's last decision under it, from the member's
/// grants.
pub fn standings(rules: Vec<EligibilityRule>, grants: &[RoleGrant]) -> Vec<RuleStanding> {
    rules
        .into_iter()
        .map(|rule| {
            let grant = grants.iter().find(|g| g.rule_id == rule.id).cloned();
            RuleStanding { rule, grant }
        })
        .collect()
}

/// Whether a member checked at `checked_at` (never: `None`) is due a look
/// that has not happened: their last outcome is older than the re-check
/// period.
pub fn is_stale(
    checked_at: Option<DateTime<Utc>>,
    recheck_period: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    let period = chrono::Duration::from_std(recheck_period).unwrap_or(chrono::Duration::MAX);
    checked_at.is_none_or(|at| now.signed_duration_since(at) > period)
}

/// Everything an admin needs to answer "why does (not) this member hold
/// that role".
#[derive(Clone, Debug, PartialEq)]
pub struct MemberDetail {
    pub profile: Profile,
    /// Every rule of the community, with its last outcome for the member.
    pub rules: Vec<RuleStanding>,
    pub badges: Vec<BadgeAward>,
}

/// A page of members matching `filter`.
pub async fn list(
    store: &Store,
    community: CommunityRef,
    filter: &MemberFilter,
) -> Result<Vec<Profile>, MemberError> {
    let tx = store.begin(community.tenant).await?;
    let members = tx.profiles().search(filter).await?;
    tx.commit().await?;
    Ok(members)
}

pub async fn detail(
    store: &Store,
    community: CommunityRef,
    user: UserId,
) -> Result<MemberDetail, MemberError> {
    let tx = store.begin(community.tenant).await?;
    let profile = tx
        .profiles()
        .find_by_discord_user(user)
        .await?
        .ok_or(MemberError::NotFound(user))?;
    let rules = tx.rules().list_all().await?;
    let grants = tx.role_grants().for_profiles(&[profile.id]).await?;
    let badges = tx.badges().awards_for(profile.id).await?;
    tx.commit().await?;
    let rules = standings(rules, &grants);
    Ok(MemberDetail {
        profile,
        rules,
        badges,
    })
}

/// Asks the workers to re-check one member now, ahead of bulk work.
pub async fn request_recheck(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    user: UserId,
) -> Result<EligibilityCheck, MemberError> {
    let tx = store.begin(community.tenant).await?;
    if tx.profiles().find_by_discord_user(user).await?.is_none() {
        return Err(MemberError::NotFound(user));
    }
    let now = Utc::now();
    let entry = actor
        .entry(AuditAction::RecheckRequested)
        .target("member", user.to_string())
        .metadata(json!({}));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    let check = crate::recheck::member_recheck(
        community.guild,
        user,
        format!("recheck:{user}:{}", uuid::Uuid::new_v4()),
        "admin.recheck",
        now.timestamp_millis(),
    );
    rechecks.request(&check).await?;
    Ok(check)
}

/// What eligibility knows about a member: their wallets and score. The one
/// mapping from a profile, for role sync and the preview alike.
pub fn facts(profile: &Profile) -> eligibility::MemberFacts {
    eligibility::MemberFacts {
        // The store only holds normalised addresses, which always parse.
        wallets: profile
            .wallets
            .iter()
            .filter_map(|w| eligibility::parse_address(w.as_str()).ok())
            .collect(),
        score: profile.score,
    }
}
