//! Badges: what earns one, and awarding them.
//!
//! A community defines badges with one of four evaluators:
//!
//! | evaluator      | criteria                                   | earned when                                   |
//! |----------------|--------------------------------------------|-----------------------------------------------|
//! | `join_order`   | `{"first": N}`                             | among the first N members by `joined_at`      |
//! | `tenure`       | `{"days": D}`                              | present and joined at least D days ago        |
//! | `tier_reached` | `{"tier": "gold"}` (+ `"ladder": [...]`)   | the profile's tier is `tier` (or, with a ladder listing tiers lowest first, at least `tier`) |
//! | `manual_grant` | `{}`                                       | only when granted through [`grant`]           |
//!
//! Awards are idempotent (a badge is held once) and never taken back, and
//! every new award writes a `badge.awarded` audit row in the same tenant
//! transaction. Automatic badges are evaluated for a member after their
//! `member.join` is applied and for every batch of the periodic re-check.
//!
//! `join_order` holds at most N awards however events interleave: awarding
//! locks the badge row and counts existing awards first. Workers process
//! joins concurrently, so a join handled out of order can take a slot that
//! an earlier joiner (whose event was still in flight) would have had; the
//! cap, not the exact set, is the guarantee.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use store::{
    repo::{AuditEntry, Badge, BadgeEvaluator, BadgeWithHolders, NewBadge, Profile},
    ProfileId, Store, StoreError, TenantId, TenantTx,
};
use wire::UserId;

use crate::{Actor, AuditAction};

/// A badge's parsed criteria.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Criteria {
    JoinOrder {
        first: i64,
    },
    Tenure {
        days: i64,
    },
    TierReached {
        tier: String,
        /// Tiers from lowest to highest; empty means "exactly `tier`".
        ladder: Vec<String>,
    },
    ManualGrant,
}

#[derive(Debug, thiserror::Error)]
pub enum BadgeError {
    /// The criteria JSON does not fit the evaluator.
    #[error("invalid badge criteria for {evaluator}: {field} {reason}")]
    Criteria {
        evaluator: BadgeEvaluator,
        /// The offending field, e.g. `criteria.first`.
        field: String,
        reason: String,
    },
    #[error("the badge's {0} must not be empty")]
    Empty(&'static str),
    #[error("no badge {0:?} in this community")]
    UnknownBadge(String),
    #[error("no member {0} in this community")]
    UnknownMember(UserId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest join_order or tenure a criterion may name: beyond this it is
/// a typo, not a plan (and it keeps date arithmetic far from overflow).
const MAX_FIRST: i64 = 10_000_000;
const MAX_DAYS: i64 = 36_500;

/// Checks `criteria` against what `evaluator` expects, naming the field at
/// fault. Unknown fields are refused too: a misspelt `"frist"` would
/// otherwise silently mean "no criteria".
pub fn parse_criteria(evaluator: BadgeEvaluator, criteria: &Value) -> Result<Criteria, BadgeError> {
    let err = |field: &str, reason: String| BadgeError::Criteria {
        evaluator,
        field: format!("criteria.{field}"),
        reason,
    };
    let Some(fields) = criteria.as_object() else {
        return Err(BadgeError::Criteria {
            evaluator,
            field: "criteria".into(),
            reason: format!("must be a JSON object, got {criteria}"),
        });
    };
    let allowed: &[&str] = match evaluator {
        BadgeEvaluator::JoinOrder => &["first"],
        BadgeEvaluator::Tenure => &["days"],
        BadgeEvaluator::TierReached => &["tier", "ladder"],
        BadgeEvaluator::ManualGrant => &[],
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        let expected = if allowed.is_empty() {
            "takes no criteria".to_owned()
        } else {
            format!("expected one of: {}", allowed.join(", "))
        };
        return Err(err(
            unknown,
            format!("is not a field of {evaluator}; {expected}"),
        ));
    }
    let integer = |field: &str, min: i64, max: i64| -> Result<i64, BadgeError> {
        match fields.get(field) {
            None => Err(err(field, "is required".into())),
            Some(v) => v
                .as_i64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    err(
                        field,
                        format!("must be an integer from {min} to {max}, got {v}"),
                    )
                }),
        }
    };
    match evaluator {
        BadgeEvaluator::JoinOrder => Ok(Criteria::JoinOrder {
            first: integer("first", 1, MAX_FIRST)?,
        }),
        BadgeEvaluator::Tenure => Ok(Criteria::Tenure {
            days: integer("days", 0, MAX_DAYS)?,
        }),
        BadgeEvaluator::TierReached => {
            let tier = match fields.get("tier") {
                None => return Err(err("tier", "is required".into())),
                Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_owned(),
                Some(v) => return Err(err("tier", format!("must be a non-empty string, got {v}"))),
            };
            let ladder = match fields.get("ladder") {
                None => Vec::new(),
                Some(Value::Array(items)) => {
                    let mut ladder = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str().map(str::trim) {
                            Some(t) if !t.is_empty() => {
                                if ladder.iter().any(|l: &String| l == t) {
                                    return Err(err(
                                        &format!("ladder[{i}]"),
                                        format!("repeats tier {t:?}"),
                                    ));
                                }
                                ladder.push(t.to_owned());
                            }
                            _ => {
                                return Err(err(
                                    &format!("ladder[{i}]"),
                                    format!("must be a non-empty string, got {item}"),
                                ))
                            }
                        }
                    }
                    if !ladder.contains(&tier) {
                        return Err(err(
                            "ladder",
                            format!("must include the tier {tier:?} it ranks against"),
                        ));
                    }
                    ladder
                }
                Some(v) => {
                    return Err(err(
                        "ladder",
                        format!("must be a list of tiers, lowest first, got {v}"),
                    ))
                }
            };
            Ok(Criteria::TierReached { tier, ladder })
        }
        BadgeEvaluator::ManualGrant => Ok(Criteria::ManualGrant),
    }
}

/// Checks a definition without touching the database: slug and name
/// present, criteria fitting the evaluator.
pub fn validate(badge: &NewBadge) -> Result<Criteria, BadgeError> {
    if badge.slug.trim().is_empty() {
        return Err(BadgeError::Empty("slug"));
    }
    if badge.name.trim().is_empty() {
        return Err(BadgeError::Empty("name"));
    }
    parse_criteria(badge.evaluator, &badge.criteria)
}

/// Creates or updates a badge definition after validating it, audited as
/// `badge.defined`. Members earn it as they join and at their next periodic
/// re-check.
pub async fn define(tx: &TenantTx, actor: &Actor, badge: &NewBadge) -> Result<Badge, BadgeError> {
    validate(badge)?;
    let defined = tx.badges().define(badge).await?;
    let entry = actor
        .entry(AuditAction::BadgeDefined)
        .target("badge", defined.id.to_string())
        .metadata(json!({
            "slug": defined.slug,
            "evaluator": defined.evaluator.as_str(),
            "criteria": defined.criteria,
        }));
    tx.audit().append(&entry).await?;
    Ok(defined)
}

/// The community's badges with how many members hold each, by slug.
pub async fn list(tx: &TenantTx) -> Result<Vec<BadgeWithHolders>, BadgeError> {
    Ok(tx.badges().list_with_holders().await?)
}

/// Grants a badge by hand (the only way a `manual_grant` badge is earned;
/// any other badge may be granted this way too). `granted_by` names the
/// admin for the audit trail. Returns false if the member already held it.
pub async fn grant(
    tx: &TenantTx,
    slug: &str,
    user: UserId,
    granted_by: &str,
    reason: &str,
) -> Result<bool, BadgeError> {
    if granted_by.trim().is_empty() {
        return Err(BadgeError::Empty(
            "granter (who grants it goes in the audit log)",
        ));
    }
    let (badge, profile) = badge_and_member(tx, slug, user).await?;
    let reason = if reason.trim().is_empty() {
        format!("granted by {granted_by}")
    } else {
        reason.trim().to_owned()
    };
    if !tx.badges().award(badge.id, profile.id, &reason).await? {
        return Ok(false);
    }
    let entry = audit_entry(
        &Actor::Admin(Some(granted_by.to_owned())),
        &badge,
        &profile,
        &reason,
    );
    tx.audit().append(&entry).await?;
    Ok(true)
}

/// Takes a badge back from a member, audited. Returns false if they did not
/// hold it. An automatic badge may be earned again at the next evaluation;
/// revoking suits `manual_grant` badges (and mistakes).
pub async fn revoke(
    tx: &TenantTx,
    actor: &Actor,
    slug: &str,
    user: UserId,
) -> Result<bool, BadgeError> {
    let (badge, profile) = badge_and_member(tx, slug, user).await?;
    if !tx.badges().revoke(badge.id, profile.id).await? {
        return Ok(false);
    }
    let entry = actor
        .entry(AuditAction::BadgeRevoked)
        .target("profile", profile.id.to_string())
        .metadata(json!({
            "badge": badge.slug,
            "badge_id": badge.id,
            "discord_user_id": profile.discord_user_id.to_string(),
        }));
    tx.audit().append(&entry).await?;
    Ok(true)
}

/// The community's badge `slug` and member `user`, or which one is missing.
async fn badge_and_member(
    tx: &TenantTx,
    slug: &str,
    user: UserId,
) -> Result<(Badge, Profile), BadgeError> {
    let badge = tx
        .badges()
        .list()
        .await?
        .into_iter()
        .find(|b| b.slug == slug)
        .ok_or_else(|| BadgeError::UnknownBadge(slug.to_owned()))?;
    let profile = tx
        .profiles()
        .find_by_discord_user(user)
        .await?
        .ok_or(BadgeError::UnknownMember(user))?;
    Ok((badge, profile))
}

/// One badge newly awarded by [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awarded {
    pub badge_slug: String,
    pub profile_id: ProfileId,
    pub discord_user_id: UserId,
    pub reason: String,
}

/// Awards every automatic badge these profiles have earned and do not hold
/// yet, with an audit row each, inside the caller's transaction, which
/// holds the profiles' rows (the periodic scan's claim). A handful of
/// statements per batch whatever its size: the badges, one ranking query
/// per `join_order` badge, and, only when a member may earn something, the
/// awards they already hold; new awards cost a statement each.
pub async fn evaluate(
    tx: &TenantTx,
    profiles: &[Profile],
    now: DateTime<Utc>,
) -> Result<Vec<Awarded>, BadgeError> {
    if profiles.iter().all(|p| p.left_at.is_some()) {
        return Ok(Vec::new());
    }
    let badges = tx.badges().list().await?;
    evaluate_with(tx, badges, profiles, Rows::Held, now).await
}

/// [`evaluate`] with the community's badges already read, by a transaction
/// that holds the profiles' rows (an eligibility check's lease).
pub(crate) async fn evaluate_held(
    tx: &TenantTx,
    badges: Vec<Badge>,
    profiles: &[Profile],
    now: DateTime<Utc>,
) -> Result<Vec<Awarded>, BadgeError> {
    evaluate_with(tx, badges, profiles, Rows::Held, now).await
}

/// Whether the transaction evaluating badges holds the profiles' rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    Held,
    /// Read without a lock: the members who may earn a badge are locked
    /// before anything is awarded, and those who left meanwhile dropped.
    Read,
}

/// [`evaluate`] with the community's badges already read.
async fn evaluate_with(
    tx: &TenantTx,
    badges: Vec<Badge>,
    profiles: &[Profile],
    rows: Rows,
    now: DateTime<Utc>,
) -> Result<Vec<Awarded>, BadgeError> {
    let present: Vec<&Profile> = profiles.iter().filter(|p| p.left_at.is_none()).collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let badges: Vec<(Badge, Criteria)> = badges
        .into_iter()
        .filter_map(|b| match parse_criteria(b.evaluator, &b.criteria) {
            Ok(Criteria::ManualGrant) => None,
            Ok(c) => Some((b, c)),
            Err(e) => {
                // Defined before validation existed, or edited by hand:
                // it awards nothing until fixed.
                tracing::warn!(badge = %b.slug, error = %e, "stored badge criteria do not validate; skipping");
                None
            }
        })
        .collect();
    if badges.is_empty() {
        return Ok(Vec::new());
    }

    // Who would earn what by their profile alone. Most batches stop here
    // (joiners past the first N, too new for tenure): no lock is taken and
    // no award read.
    let mut earning: Vec<(&Badge, &Criteria, String, Vec<&Profile>)> = Vec::new();
    for (badge, criteria) in &badges {
        let mut candidates = present.clone();
        let reason = match criteria {
            Criteria::JoinOrder { first } => {
                candidates = within_join_order(tx, *first, candidates).await?;
                format!("one of the first {first} members to join")
            }
            Criteria::Tenure { days } => {
                let since = now - chrono::Duration::days(*days);
                candidates.retain(|p| p.joined_at.is_some_and(|j| j <= since));
                format!("member for at least {days} days")
            }
            Criteria::TierReached { tier, ladder } => {
                candidates.retain(|p| tier_reached(&p.tier, tier, ladder));
                format!("reached tier {tier}")
            }
            Criteria::ManualGrant => continue,
        };
        if !candidates.is_empty() {
            earning.push((badge, criteria, reason, candidates));
        }
    }
    if earning.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<ProfileId> = earning
        .iter()
        .flat_map(|(.., candidates)| candidates.iter().map(|p| p.id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    // The lock, then the awards held, in one round trip.
    let (members, awards) = (tx.profiles(), tx.badges());
    let (still_present, held) = match rows {
        Rows::Held => (None, awards.held_by(&ids).await?),
        Rows::Read => {
            let (present, held) =
                tokio::try_join!(members.share_present(&ids), awards.held_by(&ids))?;
            (Some(present), held)
        }
    };

    let mut awarded = Vec::new();
    for (badge, criteria, reason, mut candidates) in earning {
        candidates.retain(|p| {
            !held.contains(&(badge.id, p.id))
                && still_present.as_ref().is_none_or(|s| s.contains(&p.id))
        });
        if candidates.is_empty() {
            continue;
        }
        if let Criteria::JoinOrder { first } = criteria {
            // Concurrent evaluations queue on the badge's lock, so the
            // count each sees includes the others' awards.
            let held = tx.badges().lock_and_count(badge.id).await?;
            let room = usize::try_from((first - held).max(0)).unwrap_or(0);
            candidates.sort_by_key(|p| (p.joined_at, p.discord_user_id));
            candidates.truncate(room);
        }
        for profile in candidates {
            if tx.badges().award(badge.id, profile.id, &reason).await? {
                tx.audit()
                    .append(&audit_entry(&Actor::System, badge, profile, &reason))
                    .await?;
                awarded.push(Awarded {
                    badge_slug: badge.slug.clone(),
                    profile_id: profile.id,
                    discord_user_id: profile.discord_user_id,
                    reason: reason.clone(),
                });
            }
        }
    }
    if !awarded.is_empty() {
        metrics::counter!("worker_badges_awarded_total").increment(awarded.len() as u64);
    }
    Ok(awarded)
}

/// Evaluates one member's automatic badges in a transaction of its own.
pub async fn evaluate_member(
    store: &Store,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<Awarded>, BadgeError> {
    evaluate_members(store, tenant, &[user]).await
}

/// Evaluates the badges of several members of one community in one
/// transaction (the members of a batch of joins).
pub async fn evaluate_members(
    store: &Store,
    tenant: TenantId,
    users: &[UserId],
) -> Result<Vec<Awarded>, BadgeError> {
    let tx = store.begin(tenant).await?;
    // Both reads in one round trip.
    let (members, badges) = (tx.profiles(), tx.badges());
    let (profiles, badges) = tokio::try_join!(members.find_by_discord_users(users), badges.list())?;
    let awarded = evaluate_with(&tx, badges, &profiles, Rows::Read, Utc::now()).await?;
    tx.commit().await?;
    Ok(awarded)
}

fn tier_reached(has: &str, wanted: &str, ladder: &[String]) -> bool {
    if ladder.is_empty() {
        return has == wanted;
    }
    let rank = |t: &str| ladder.iter().position(|l| l == t);
    match (rank(has), rank(wanted)) {
        (Some(h), Some(w)) => h >= w,
        // A tier not on the ladder ranks nowhere: only an exact match counts.
        _ => has == wanted,
    }
}

/// Of `candidates`, those among the first `first` members by join time.
/// How many of them still fit under the cap is known only under the
/// badge's lock (see [`evaluate_with`]).
async fn within_join_order<'p>(
    tx: &TenantTx,
    first: i64,
    mut candidates: Vec<&'p Profile>,
) -> Result<Vec<&'p Profile>, BadgeError> {
    // The `first`-th member's position; with fewer members, everyone is in.
    let cutoff = tx.badges().join_position(first).await?;
    candidates.retain(|p| match (p.joined_at, cutoff) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(at), Some(cut)) => (at, p.discord_user_id) <= cut,
    });
    Ok(candidates)
}

fn audit_entry(actor: &Actor, badge: &Badge, profile: &Profile, reason: &str) -> AuditEntry {
    actor
        .entry(AuditAction::BadgeAwarded)
        .target("profile", profile.id.to_string())
        .metadata(json!({
            "badge": badge.slug,
            "badge_id": badge.id,
            "discord_user_id": profile.discord_user_id.to_string(),
            "reason": reason,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: BadgeError) -> String {
        match e {
            BadgeError::Criteria { field, .. } => field,
            other => panic!("expected a criteria error, got {other}"),
        }
    }

    #[test]
    fn valid_criteria_parse() {
        assert_eq!(
            parse_criteria(BadgeEvaluator::JoinOrder, &json!({"first": 100})).unwrap(),
            Criteria::JoinOrder { first: 100 }
        );
        assert_eq!(
            parse_criteria(BadgeEvaluator::Tenure, &json!({"days": 30})).unwrap(),
            Criteria::Tenure { days: 30 }
        );
        assert_eq!(
            parse_criteria(
                BadgeEvaluator::TierReached,
                &json!({"tier": "gold", "ladder": ["bronze", "silver", "gold"]})
            )
            .unwrap(),
            Criteria::TierReached {
                tier: "gold".into(),
                ladder: vec!["bronze".into(), "silver".into(), "gold".into()]
            }
        );
        assert_eq!(
            parse_criteria(BadgeEvaluator::ManualGrant, &json!({})).unwrap(),
            Criteria::ManualGrant
        );
    }

    #[test]
    fn invalid_criteria_name_the_field() {
        let cases = [
            (BadgeEvaluator::JoinOrder, json!({}), "criteria.first"),
            (
                BadgeEvaluator::JoinOrder,
                json!({"first": 0}),
                "criteria.first",
            ),
            (
                BadgeEvaluator::JoinOrder,
                json!({"first": "10"}),
                "criteria.first",
            ),
            (
                BadgeEvaluator::JoinOrder,
                json!({"first": 1, "frist": 2}),
                "criteria.frist",
            ),
            (BadgeEvaluator::Tenure, json!({"days": -1}), "criteria.days"),
            (
                BadgeEvaluator::Tenure,
                json!({"days": 1.5}),
                "criteria.days",
            ),
            (
                BadgeEvaluator::TierReached,
                json!({"tier": ""}),
                "criteria.tier",
            ),
            (
                BadgeEvaluator::TierReached,
                json!({"tier": "gold", "ladder": ["silver"]}),
                "criteria.ladder",
            ),
            (
                BadgeEvaluator::TierReached,
                json!({"tier": "gold", "ladder": ["gold", 3]}),
                "criteria.ladder[1]",
            ),
            (
                BadgeEvaluator::TierReached,
                json!({"tier": "gold", "ladder": ["gold", "gold"]}),
                "criteria.ladder[1]",
            ),
            (
                BadgeEvaluator::ManualGrant,
                json!({"first": 1}),
                "criteria.first",
            ),
            (BadgeEvaluator::Tenure, json!([1]), "criteria"),
        ];
        for (evaluator, criteria, field) in cases {
            let e = parse_criteria(evaluator, &criteria).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
            assert_eq!(field_of(e), field, "{evaluator} {criteria}");
        }
    }

    #[test]
    fn tiers_compare_exactly_or_along_the_ladder() {
        let ladder: Vec<String> = ["bronze", "silver", "gold"].map(String::from).to_vec();
        assert!(tier_reached("gold", "gold", &[]));
        assert!(!tier_reached("platinum", "gold", &[]));
        assert!(tier_reached("gold", "silver", &ladder));
        assert!(tier_reached("silver", "silver", &ladder));
        assert!(!tier_reached("bronze", "silver", &ladder));
        assert!(!tier_reached("member", "silver", &ladder));
    }
}
