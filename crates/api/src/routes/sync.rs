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
    /// The latest sync of the member list from Discord: when the bot
    /// joins, or after a gateway session Discord could not resume, the
    /// whole list is asked for and ingested chunk by chunk. Absent: never
    /// synced.
    pub member_list: Option<MemberListView>,
}

/// Progress of one sync of the member list.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberListView {
    /// Chunks (of up to 1,000 members) ingested, of `chunks_expected`.
    pub chunks_received: i32,
    pub chunks_expected: i32,
    /// Members listed by the chunks ingested so far.
    pub members_received: i64,
    pub started_at: DateTime<Utc>,
    /// When the last chunk was ingested; absent while in progress.
    pub completed_at: Option<DateTime<Utc>>,
    /// Members Gatehouse knew who were in no chunk, now marked as left.
    pub members_left: Option<i64>,
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
        member_list: s.member_list.map(|m| MemberListView {
            chunks_received: m.chunks_received,
            chunks_expected: m.chunk_count,
            members_received: m.members_received,
            started_at: m.started_at,
            completed_at: m.completed_at,
            members_left: m.members_left,
        }),
    }))
}
