use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::keys::Scope;
use serde::{Deserialize, Serialize};
use store::repo::{ActorType, AuditFilter, AuditRecord};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Query;
use crate::routes::page_limit;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// `user`, `system` or `admin`.
    pub actor_type: String,
    /// A member's Discord id, `api_key:<id>` for API keys, or null.
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        AuditView {
            id: r.id,
            actor_type: r.actor_type.as_str().to_owned(),
            actor_id: r.actor_id,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            metadata: r.metadata,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The previous page's `next`.
    pub before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<u32>,
    /// e.g. `role.granted`.
    pub action: Option<String>,
    /// `user`, `system` or `admin`.
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// The audit log, newest first, a page at a time.
#[utoipa::path(operation_id = "listAudit", get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    caller.require(Scope::Read)?;
    let limit = page_limit(query.limit)?;
    let actor_type = query
        .actor_type
        .as_deref()
        .map(|t| {
            t.parse::<ActorType>().map_err(|_| {
                ApiError::invalid(format!(
                    "actor_type: {t:?} is not one of user, system, admin"
                ))
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        before: query.before,
        action: query.action,
        actor_type,
        actor_id: query.actor_id,
        target_id: query.target_id,
        since: query.since,
        until: query.until,
        limit: i64::from(limit),
    };
    let records = domain::audit::page(state.store(), caller.community(), &filter).await?;
    let next = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    Ok(axum::Json(AuditPage {
        entries: records.into_iter().map(AuditView::from).collect(),
        next,
    }))
}
