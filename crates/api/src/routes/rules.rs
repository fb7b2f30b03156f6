use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::keys::Scope;
use domain::preview::{self, RuleChange};
use domain::rules::{self, NewRule, RuleError};
use eligibility::RuleSpec;
use serde::{Deserialize, Serialize};
use store::repo::EligibilityRule;
use store::RuleId;
use utoipa::ToSchema;
use wire::RoleId;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::extract::{Json, Path};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: uuid::Uuid,
    /// The Discord role the rule grants (a snowflake, as a string).
    pub role_id: String,
    /// `token_balance`, `nft_ownership`, `score_threshold` or `custom`.
    pub rule_type: String,
    pub chain: Option<String>,
    pub contract_address: Option<String>,
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    pub priority: i32,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EligibilityRule> for RuleView {
    fn from(r: EligibilityRule) -> Self {
        RuleView {
            id: *r.id.as_uuid(),
            role_id: r.role_discord_id.to_string(),
            rule_type: r.rule_type.as_str().to_owned(),
            chain: r.chain,
            contract_address: r.contract_address.as_ref().map(|a| a.as_str().to_owned()),
            parameters: r.parameters,
            priority: r.priority,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A rule to create, or a rule's new definition. docs/eligibility.md lists
/// the parameters of each type.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub role_id: String,
    pub rule_type: String,
    #[serde(default)]
    pub chain: Option<String>,
    #[serde(default)]
    pub contract_address: Option<String>,
    #[serde(default = "crate::routes::empty_object")]
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    #[serde(default)]
    pub priority: i32,
}

impl RuleInput {
    /// The validated rule, or every bad field at once.
    pub(crate) fn validate(&self) -> Result<NewRule, ApiError> {
        let mut fields = Vec::new();
        let role = self.role_id.parse::<RoleId>().map_err(|_| {
            fields.push(FieldProblem::new(
                "role_id",
                format!("{:?} is not a Discord role id", self.role_id),
                "a role's snowflake, as a string of digits",
            ));
        });
        let spec = RuleSpec::parse(
            &self.rule_type,
            self.chain.as_deref(),
            self.contract_address.as_deref(),
            &self.parameters,
        )
        .map_err(|e| {
            fields.extend(
                e.errors
                    .into_iter()
                    .map(|f| FieldProblem::new(f.field, f.problem, f.expected)),
            );
        });
        match (role, spec) {
            (Ok(role), Ok(spec)) => Ok(NewRule {
                role,
                spec,
                priority: self.priority,
            }),
            _ => Err(ApiError::validation(
                "the rule is invalid; nothing was stored",
                fields,
            )),
        }
    }
}

pub(crate) fn rule_error(e: RuleError) -> ApiError {
    match e {
        RuleError::NotFound(_) => ApiError::not_found("no such rule"),
        RuleError::BadReference { reason } => ApiError::field(
            "parameters.rules",
            reason,
            "ids of this community's rules, without a cycle",
        ),
        e @ (RuleError::InUse { .. } | RuleError::RoleTaken(_)) => {
            ApiError::conflict(e.to_string())
        }
        RuleError::Store(store::StoreError::Conflict { .. }) => ApiError::conflict(
            "another rule already grants this role: change or delete that rule first",
        ),
        RuleError::Recheck(e) => e.into(),
        RuleError::Store(e) => e.into(),
    }
}

fn rule_id(raw: &uuid::Uuid) -> RuleId {
    RuleId::from(*raw)
}

/// The community's rules, highest priority first.
#[utoipa::path(operation_id = "listRules", get, path = "/v1/rules", tag = "rules",
    responses((status = 200, body = Vec<RuleView>), (status = 401, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<RuleView>>, ApiError> {
    caller.require(Scope::Read)?;
    let rules = rules::list(state.store(), caller.community())
        .await
        .map_err(rule_error)?;
    Ok(axum::Json(rules.into_iter().map(RuleView::from).collect()))
}

/// One rule.
#[utoipa::path(operation_id = "getRule", get, path = "/v1/rules/{id}", tag = "rules", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Scope::Read)?;
    let rules = rules::list(state.store(), caller.community())
        .await
        .map_err(rule_error)?;
    let rule = rules
        .into_iter()
        .find(|r| r.id == rule_id(&id))
        .ok_or_else(|| ApiError::not_found("no such rule"))?;
    Ok(axum::Json(rule.into()))
}

/// Create a rule. Validated as a whole: a bad rule answers 422 listing every
/// bad field. The community is re-checked once it is saved.
#[utoipa::path(operation_id = "createRule", post, path = "/v1/rules", tag = "rules", request_body = RuleInput,
    responses((status = 201, body = RuleView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<RuleInput>,
) -> Result<(StatusCode, axum::Json<RuleView>), ApiError> {
    caller.require(Scope::RulesWrite)?;
    let rule = input.validate()?;
    let created = rules::create(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        &rule,
    )
    .await
    .map_err(rule_error)?;
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

/// Replace a rule's definition (keeps its id and whether it is enabled).
#[utoipa::path(operation_id = "updateRule", put, path = "/v1/rules/{id}", tag = "rules", params(("id" = uuid::Uuid, Path)),
    request_body = RuleInput,
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
    Json(input): Json<RuleInput>,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Scope::RulesWrite)?;
    let rule = input.validate()?;
    let updated = rules::update(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        rule_id(&id),
        &rule,
    )
    .await
    .map_err(rule_error)?;
    Ok(axum::Json(updated.into()))
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: uuid::Uuid,
    enabled: bool,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Scope::RulesWrite)?;
    let toggled = rules::set_enabled(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        rule_id(&id),
        enabled,
    )
    .await
    .map_err(rule_error)?;
    Ok(axum::Json(toggled.rule.into()))
}

/// Let the rule grant and remove its role.
#[utoipa::path(operation_id = "enableRule", post, path = "/v1/rules/{id}/enable", tag = "rules", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> Result<axum::Json<RuleView>, ApiError> {
    set_enabled(&state, &caller, id, true).await
}

/// Stop the rule from granting or removing its role; members keep what they hold.
#[utoipa::path(operation_id = "disableRule", post, path = "/v1/rules/{id}/disable", tag = "rules", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> Result<axum::Json<RuleView>, ApiError> {
    set_enabled(&state, &caller, id, false).await
}

/// Delete a rule (refused with 409 while a custom rule uses it). Members
/// keep the role; it is no longer managed.
#[utoipa::path(operation_id = "deleteRule", delete, path = "/v1/rules/{id}", tag = "rules", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = ["rules:write"])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::RulesWrite)?;
    rules::delete(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        rule_id(&id),
    )
    .await
    .map_err(rule_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A rule change to preview.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub change: ChangeKind,
    /// The rule to update, enable, disable or delete.
    pub rule_id: Option<uuid::Uuid>,
    /// The new definition, for `create` and `update`.
    pub rule: Option<RuleInput>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Update,
    Enable,
    Disable,
    Delete,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    /// Present members evaluated.
    pub members: u64,
    /// Members whose last check is older than the re-check period: Discord
    /// may still show what an older chain state earned them.
    pub stale: u64,
    pub evaluated_at: DateTime<Utc>,
    /// One entry per role the change touches.
    pub roles: Vec<RoleEffectView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleEffectView {
    pub role_id: String,
    /// Members who would be granted the role.
    pub gain: u64,
    /// Members who would lose it (after the grace period).
    pub lose: u64,
    /// Members the new rules cannot decide now (a chain could not be read);
    /// they keep what they hold until it can.
    pub undecided: u64,
    pub gain_sample: Vec<String>,
    pub lose_sample: Vec<String>,
}

/// Dry run: what a rule change would do to members' roles, before it is
/// saved. Nothing is written and nothing is sent to Discord.
#[utoipa::path(operation_id = "previewRuleChange", post, path = "/v1/rules/preview", tag = "rules", request_body = PreviewRequest,
    responses((status = 200, body = PreviewView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<PreviewRequest>,
) -> Result<axum::Json<PreviewView>, ApiError> {
    caller.require(Scope::Read)?;
    let id = || {
        request.rule_id.map(RuleId::from).ok_or_else(|| {
            ApiError::field(
                "rule_id",
                "missing",
                "the id of the rule this change applies to",
            )
        })
    };
    let rule = || {
        request
            .rule
            .as_ref()
            .ok_or_else(|| ApiError::field("rule", "missing", "the rule's new definition"))
            .and_then(RuleInput::validate)
    };
    let change = match request.change {
        ChangeKind::Create => RuleChange::Create(rule()?),
        ChangeKind::Update => RuleChange::Update {
            id: id()?,
            rule: rule()?,
        },
        ChangeKind::Enable => RuleChange::Enable(id()?),
        ChangeKind::Disable => RuleChange::Disable(id()?),
        ChangeKind::Delete => RuleChange::Delete(id()?),
    };
    let settings = &state.0.settings;
    let preview = preview::preview(
        state.store(),
        &state.0.evaluator,
        caller.community(),
        &change,
        settings.recheck_period,
        settings.preview_sample,
    )
    .await
    .map_err(rule_error)?;
    Ok(axum::Json(PreviewView {
        members: preview.members,
        stale: preview.stale,
        evaluated_at: preview.evaluated_at,
        roles: preview
            .roles
            .into_iter()
            .map(|r| RoleEffectView {
                role_id: r.role.to_string(),
                gain: r.gain,
                lose: r.lose,
                undecided: r.undecided,
                gain_sample: r.gain_sample.iter().map(ToString::to_string).collect(),
                lose_sample: r.lose_sample.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }))
}
