use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::keys::Scope;
use domain::members::{self, MemberError};
use serde::{Deserialize, Serialize};
use store::repo::{MemberFilter, Profile};
use utoipa::{IntoParams, ToSchema};
use wire::{RoleId, UserId};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Path, Query};
use crate::routes::{page_limit, user_id};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub wallet_address: Option<String>,
    /// Every linked wallet, in the order linked; rules count holdings
    /// across all of them.
    pub wallets: Vec<String>,
    pub score: i64,
    pub tier: String,
    /// The Discord roles the member held at the last event seen.
    pub role_ids: Vec<String>,
    pub joined_at: Option<DateTime<Utc>>,
    /// Set when the member has left the server.
    pub left_at: Option<DateTime<Utc>>,
    /// When the periodic re-check next looks at them; null: due now.
    pub next_check_at: Option<DateTime<Utc>>,
}

impl From<&Profile> for MemberView {
    fn from(p: &Profile) -> Self {
        MemberView {
            user_id: p.discord_user_id.to_string(),
            wallet_address: p.wallets.first().map(|w| w.as_str().to_owned()),
            wallets: p.wallets.iter().map(|w| w.as_str().to_owned()).collect(),
            score: p.score,
            tier: p.tier.clone(),
            role_ids: p.role_ids.iter().map(ToString::to_string).collect(),
            joined_at: p.joined_at,
            left_at: p.left_at,
            next_check_at: p.next_check_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
    pub has_wallet: Option<bool>,
    /// Only members holding this Discord role.
    pub holds_role: Option<String>,
    /// Only members whose last decided outcome for this rule is "not eligible".
    pub failing_rule: Option<uuid::Uuid>,
    /// true: still in the server; false: left. Default: both.
    pub present: Option<bool>,
}

pub(crate) fn member_error(e: MemberError) -> ApiError {
    match e {
        MemberError::NotFound(_) => ApiError::not_found("no such member"),
        MemberError::Recheck(e) => e.into(),
        MemberError::Store(e) => e.into(),
    }
}

/// Members, by Discord user id, a page at a time.
#[utoipa::path(operation_id = "listMembers", get, path = "/v1/members", tag = "members", params(MemberQuery),
    responses((status = 200, body = MemberPage), (status = 400, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<MemberQuery>,
) -> Result<axum::Json<MemberPage>, ApiError> {
    caller.require(Scope::Read)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .after
        .as_deref()
        .map(|a| {
            a.parse::<UserId>().map_err(|_| {
                ApiError::invalid(format!("after: {a:?} is not a cursor from a previous page"))
            })
        })
        .transpose()?;
    let holds_role = query
        .holds_role
        .as_deref()
        .map(|r| {
            r.parse::<RoleId>().map_err(|_| {
                ApiError::invalid(format!("holds_role: {r:?} is not a Discord role id"))
            })
        })
        .transpose()?;
    let filter = MemberFilter {
        after,
        has_wallet: query.has_wallet,
        holds_role,
        failing_rule: query.failing_rule.map(store::RuleId::from),
        present: query.present,
        limit: i64::from(limit),
    };
    let members = members::list(state.store(), caller.community(), &filter)
        .await
        .map_err(member_error)?;
    let next = (members.len() == limit as usize)
        .then(|| members.last().map(|m| m.discord_user_id.to_string()))
        .flatten();
    Ok(axum::Json(MemberPage {
        members: members.iter().map(MemberView::from).collect(),
        next,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDetailView {
    pub member: MemberView,
    /// Every rule of the community and where the member stands with it.
    pub rules: Vec<RuleStandingView>,
    pub badges: Vec<BadgeHeldView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleStandingView {
    pub rule_id: uuid::Uuid,
    pub rule_type: String,
    pub role_id: String,
    pub enabled: bool,
    /// Whether the member holds the rule's role (at the last event seen).
    pub holds_role: bool,
    /// `eligible`, `not_eligible`, `undecided` (the chain could not be read)
    /// or `never_checked`.
    pub outcome: String,
    /// What was measured against what was required, e.g.
    /// `balance 5 (needs 10)`: the requirement that failed, when it failed.
    pub detail: Option<String>,
    /// Since when the member fails the rule while holding its role (the
    /// grace period runs from here).
    pub failing_since: Option<DateTime<Utc>>,
    pub checked_at: Option<DateTime<Utc>>,
    /// The outcome is older than the re-check period.
    pub stale: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BadgeHeldView {
    pub slug: String,
    pub name: String,
    pub reason: String,
    pub awarded_at: DateTime<Utc>,
}

/// One member: wallet, roles and the rule behind each, every rule's last
/// outcome and badges.
#[utoipa::path(operation_id = "getMember", get, path = "/v1/members/{user_id}", tag = "members", params(("user_id" = String, Path)),
    responses((status = 200, body = MemberDetailView), (status = 404, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<axum::Json<MemberDetailView>, ApiError> {
    caller.require(Scope::Read)?;
    let user = user_id(&user)?;
    let detail = members::detail(state.store(), caller.community(), user)
        .await
        .map_err(member_error)?;
    let now = Utc::now();
    let period = state.0.settings.recheck_period;
    let rules = detail
        .rules
        .iter()
        .map(|standing| {
            let rule = &standing.rule;
            let grant = standing.grant.as_ref();
            let outcome = match grant.map(|g| g.eligible) {
                None => "never_checked",
                Some(None) => "undecided",
                Some(Some(true)) => "eligible",
                Some(Some(false)) => "not_eligible",
            };
            RuleStandingView {
                rule_id: *rule.id.as_uuid(),
                rule_type: rule.rule_type.as_str().to_owned(),
                role_id: rule.role_discord_id.to_string(),
                enabled: rule.enabled,
                holds_role: detail.profile.role_ids.contains(&rule.role_discord_id),
                outcome: outcome.to_owned(),
                detail: grant.map(|g| g.detail.clone()).filter(|d| !d.is_empty()),
                failing_since: grant.and_then(|g| g.failing_since),
                checked_at: grant.map(|g| g.checked_at),
                stale: standing.is_stale(period, now),
            }
        })
        .collect();
    Ok(axum::Json(MemberDetailView {
        member: MemberView::from(&detail.profile),
        rules,
        badges: detail
            .badges
            .into_iter()
            .map(|b| BadgeHeldView {
                slug: b.badge.slug,
                name: b.badge.name,
                reason: b.reason,
                awarded_at: b.awarded_at,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecheckAccepted {
    /// The request's id on the bus.
    pub check_id: String,
}

/// Ask the workers to re-check this member now, ahead of bulk work.
#[utoipa::path(operation_id = "recheckMember", post, path = "/v1/members/{user_id}/recheck", tag = "members", params(("user_id" = String, Path)),
    responses((status = 202, body = RecheckAccepted), (status = 404, body = ErrorBody)),
    security(("api_key" = ["members:write"])))]
pub async fn recheck(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<(StatusCode, axum::Json<RecheckAccepted>), ApiError> {
    caller.require(Scope::MembersWrite)?;
    let user = user_id(&user)?;
    let check = members::request_recheck(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        user,
    )
    .await
    .map_err(member_error)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RecheckAccepted { check_id: check.id }),
    ))
}
