use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::community::{self, SettingsError, SettingsPatch};
use domain::keys::Scope;
use serde::{Deserialize, Serialize};
use store::repo::Community;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CommunityView {
    pub id: uuid::Uuid,
    /// The Discord server (a snowflake, as a string).
    pub guild_id: String,
    /// Follows the Discord server's name.
    pub name: String,
    pub theme_id: String,
    pub subscription_tier: String,
    /// Free-form settings object for the community's own front ends.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Community> for CommunityView {
    fn from(c: Community) -> Self {
        CommunityView {
            id: *c.id.as_uuid(),
            guild_id: c.discord_guild_id.to_string(),
            name: c.name,
            theme_id: c.theme_id,
            subscription_tier: c.subscription_tier.as_str().to_owned(),
            settings: c.settings,
            active: c.active,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The settings that are the community's to change. Fields left out keep
/// their value. The name follows Discord; the tier and whether the
/// community is active are the operator's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunityPatch {
    pub theme_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
}

/// The key's community.
#[utoipa::path(operation_id = "getCommunity", get, path = "/v1/community", tag = "community",
    responses((status = 200, body = CommunityView), (status = 401, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<CommunityView>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(axum::Json(
        community::get(state.store(), caller.community())
            .await?
            .into(),
    ))
}

/// Change the community's theme or settings object.
#[utoipa::path(operation_id = "updateCommunity", patch, path = "/v1/community", tag = "community", request_body = CommunityPatch,
    responses((status = 200, body = CommunityView), (status = 422, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Json(patch): Json<CommunityPatch>,
) -> Result<axum::Json<CommunityView>, ApiError> {
    // Settings shape how rules and the dashboard behave: the same scope.
    caller.require(Scope::RulesWrite)?;
    let patch = SettingsPatch {
        theme_id: patch.theme_id,
        settings: patch.settings,
    };
    let updated =
        community::update_settings(state.store(), caller.community(), &caller.actor(), &patch)
            .await
            .map_err(|e| match e {
                SettingsError::Invalid(problems) => ApiError::validation(
                    "invalid settings",
                    problems
                        .into_iter()
                        .map(|(field, problem)| FieldProblem::new(field, problem.clone(), problem))
                        .collect(),
                ),
                SettingsError::Store(e) => e.into(),
            })?;
    Ok(axum::Json(updated.into()))
}
