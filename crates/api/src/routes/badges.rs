use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::badges::{self, BadgeError};
use domain::keys::Scope;
use serde::{Deserialize, Serialize};
use store::repo::{BadgeEvaluator, NewBadge};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::routes::user_id;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct BadgeView {
    pub id: uuid::Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `join_order`, `tenure`, `tier_reached` or `manual_grant`.
    pub evaluator: String,
    #[schema(value_type = Object)]
    pub criteria: serde_json::Value,
    pub holders: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BadgeInput {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub evaluator: String,
    #[serde(default = "crate::routes::empty_object")]
    #[schema(value_type = Object)]
    pub criteria: serde_json::Value,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Shown to the member and kept in the audit log.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// False when there was nothing to do (already held / not held).
    pub changed: bool,
}

pub(crate) fn badge_error(e: BadgeError) -> ApiError {
    match e {
        BadgeError::Criteria {
            field,
            reason,
            evaluator,
        } => ApiError::field(
            &field,
            reason,
            format!("the criteria of a {evaluator} badge (docs/badges.md)"),
        ),
        BadgeError::Empty(field) => ApiError::field(field, "empty", "a non-empty value"),
        BadgeError::UnknownBadge(_) => ApiError::not_found("no such badge"),
        BadgeError::UnknownMember(_) => ApiError::not_found("no such member"),
        BadgeError::Store(e) => e.into(),
    }
}

/// The community's badges with their number of holders.
#[utoipa::path(operation_id = "listBadges", get, path = "/v1/badges", tag = "badges",
    responses((status = 200, body = Vec<BadgeView>)), security(("api_key" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<BadgeView>>, ApiError> {
    caller.require(Scope::Read)?;
    let tx = state.store().begin(caller.community().tenant).await?;
    let badges = badges::list(&tx).await.map_err(badge_error)?;
    tx.commit().await?;
    Ok(axum::Json(
        badges
            .into_iter()
            .map(|b| BadgeView {
                id: *b.badge.id.as_uuid(),
                slug: b.badge.slug,
                name: b.badge.name,
                description: b.badge.description,
                evaluator: b.badge.evaluator.as_str().to_owned(),
                criteria: b.badge.criteria,
                holders: b.holders,
                created_at: b.badge.created_at,
            })
            .collect(),
    ))
}

/// Define a badge (docs/badges.md lists each evaluator's criteria).
#[utoipa::path(operation_id = "defineBadge", post, path = "/v1/badges", tag = "badges", request_body = BadgeInput,
    responses((status = 201, body = BadgeView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["badges:write"])))]
pub async fn define(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<BadgeInput>,
) -> Result<(StatusCode, axum::Json<BadgeView>), ApiError> {
    caller.require(Scope::BadgesWrite)?;
    let evaluator: BadgeEvaluator = input.evaluator.parse().map_err(|_| {
        ApiError::field(
            "evaluator",
            format!("{:?} is not an evaluator", input.evaluator),
            "join_order, tenure, tier_reached or manual_grant",
        )
    })?;
    let badge = NewBadge {
        slug: input.slug,
        name: input.name,
        description: input.description,
        evaluator,
        criteria: input.criteria,
    };
    badges::validate(&badge).map_err(badge_error)?;
    let tx = state.store().begin(caller.community().tenant).await?;
    let defined = badges::define(&tx, &caller.actor(), &badge)
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(BadgeView {
            id: *defined.id.as_uuid(),
            slug: defined.slug,
            name: defined.name,
            description: defined.description,
            evaluator: defined.evaluator.as_str().to_owned(),
            criteria: defined.criteria,
            holders: 0,
            created_at: defined.created_at,
        }),
    ))
}

/// Grant a badge to a member by hand.
#[utoipa::path(operation_id = "grantBadge", put, path = "/v1/badges/{slug}/holders/{user_id}", tag = "badges",
    params(("slug" = String, Path), ("user_id" = String, Path)), request_body = GrantInput,
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody)),
    security(("api_key" = ["badges:write"])))]
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    Path((slug, user)): Path<(String, String)>,
    Json(input): Json<GrantInput>,
) -> Result<axum::Json<Changed>, ApiError> {
    caller.require(Scope::BadgesWrite)?;
    let user = user_id(&user)?;
    let granted_by = format!("api_key:{}", caller.0.key);
    let tx = state.store().begin(caller.community().tenant).await?;
    let changed = badges::grant(&tx, &slug, user, &granted_by, &input.reason)
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    Ok(axum::Json(Changed { changed }))
}

/// Take a badge back from a member.
#[utoipa::path(operation_id = "revokeBadge", delete, path = "/v1/badges/{slug}/holders/{user_id}", tag = "badges",
    params(("slug" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody)),
    security(("api_key" = ["badges:write"])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((slug, user)): Path<(String, String)>,
) -> Result<axum::Json<Changed>, ApiError> {
    caller.require(Scope::BadgesWrite)?;
    let user = user_id(&user)?;
    let tx = state.store().begin(caller.community().tenant).await?;
    let changed = badges::revoke(&tx, &caller.actor(), &slug, user)
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    Ok(axum::Json(Changed { changed }))
}
