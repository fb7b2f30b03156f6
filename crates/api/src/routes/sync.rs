use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::keys::Scope;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Where the community's role sync stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatusView {
    /// Members present now.
    pub members: i64,
    /// Members whose re-check is due (new members, changed rules, the
    /// re-check period elapsed).
    pub due: i64,
    /// Members a worker is checking right now.
    pub in_flight: i64,
    /// When the periodic re-check last finished a pass over the community.
    pub last_pass_at: Option<DateTime<Utc>>,
    /// Decisions not yet reflected in the member's Discord roles.
    pub role_changes_queued: i64,
    /// Roles granted and removed in the last hour.
    pub role_changes_applied_last_hour: i64,
    /// Role changes Discord refused with 429 in the last hour (retried by
    /// the next check).
    pub discord_429s_last_hour: i64,
    /// Rule outcomes left undecided in the last hour because the chain could
    /// not be read (members keep what they hold meanwhile), by chain.
    pub chain_reads_failing_last_hour: BTreeMap<String, i64>,
}

/// What an admin looks at when roles lag behind the rules.
#[utoipa::path(operation_id = "getSyncStatus", get, path = "/v1/sync-status", tag = "sync",
    responses((status = 200, body = SyncStatusView)), security(("api_key" = ["read"])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<SyncStatusView>, ApiError> {
    caller.require(Scope::Read)?;
    let s = domain::community::sync_status(state.store(), caller.community()).await?;
    Ok(axum::Json(SyncStatusView {
        members: s.members,
        due: s.due,
        in_flight: s.in_flight,
        last_pass_at: s.last_pass_at,
        role_changes_queued: s.changes_pending,
        role_changes_applied_last_hour: s.changes_applied_last_hour,
        discord_429s_last_hour: s.discord_429s_last_hour,
        chain_reads_failing_last_hour: s.chain_undecided_last_hour.into_iter().collect(),
    }))
}
