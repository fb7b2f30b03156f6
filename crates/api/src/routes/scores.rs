use axum::extract::State;
use axum::http::{header, HeaderMap};
use domain::keys::Scope;
use domain::scores::{self, ImportFormat, ScoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::extract::{Json, Path};
use crate::routes::user_id;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreInput {
    pub score: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResult {
    /// Members whose score changed (audited, and re-checked).
    pub changed: usize,
    /// Rows whose member already had that score: nothing was written.
    pub unchanged: usize,
    /// User ids with no member in this community: nothing was stored.
    pub unknown: Vec<String>,
}

fn score_error(e: ScoreError) -> ApiError {
    match e {
        ScoreError::Invalid(lines) => ApiError::validation(
            format!(
                "the import has {} bad line(s); nothing was stored",
                lines.len()
            ),
            lines
                .into_iter()
                .map(|l| {
                    FieldProblem::new(
                        format!("line {}", l.line),
                        l.problem,
                        "user_id and an integer score",
                    )
                })
                .collect(),
        ),
        e @ ScoreError::TooMany(_) => ApiError::too_large(e.to_string()),
        ScoreError::Recheck(e) => e.into(),
        ScoreError::Store(e) => e.into(),
    }
}

fn result(import: scores::ScoreImport) -> ScoreResult {
    ScoreResult {
        changed: import.changed.len(),
        unchanged: import.unchanged,
        unknown: import.unknown.iter().map(ToString::to_string).collect(),
    }
}

/// Set one member's score.
#[utoipa::path(operation_id = "setScore", put, path = "/v1/members/{user_id}/score", tag = "scores", params(("user_id" = String, Path)),
    request_body = ScoreInput,
    responses((status = 200, body = ScoreResult), (status = 404, body = ErrorBody)),
    security(("api_key" = ["members:write"])))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    Json(input): Json<ScoreInput>,
) -> Result<axum::Json<ScoreResult>, ApiError> {
    caller.require(Scope::MembersWrite)?;
    let user = user_id(&user)?;
    let import = scores::set(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        &[(user, input.score)],
    )
    .await
    .map_err(score_error)?;
    if !import.unknown.is_empty() {
        return Err(ApiError::not_found("no such member"));
    }
    Ok(axum::Json(result(import)))
}

/// Import many scores: CSV (`user_id,score`, optional header) with
/// `Content-Type: text/csv`, or JSON lines (`{"user_id": "…", "score": 42}`)
/// with `application/x-ndjson`. Idempotent: re-running an import changes
/// nothing. Every bad line is listed; a file with any bad line stores nothing.
#[utoipa::path(operation_id = "importScores", post, path = "/v1/scores/import", tag = "scores",
    request_body(content = String, content_type = "text/csv", description = "CSV or JSON lines"),
    responses((status = 200, body = ScoreResult), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["members:write"])))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: String,
) -> Result<axum::Json<ScoreResult>, ApiError> {
    caller.require(Scope::MembersWrite)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match content_type.as_str() {
        "text/csv" => ImportFormat::Csv,
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            ImportFormat::JsonLines
        }
        other => {
            return Err(ApiError::unsupported_media(format!(
            "content type {other:?} is not an import format: send text/csv or application/x-ndjson"
        )))
        }
    };
    let rows = scores::parse(&body, format).map_err(score_error)?;
    let import = scores::set(
        state.store(),
        &state.0.rechecks,
        caller.community(),
        &caller.actor(),
        &rows,
    )
    .await
    .map_err(score_error)?;
    Ok(axum::Json(result(import)))
}
