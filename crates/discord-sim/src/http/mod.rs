//! The HTTP listener: Discord's REST API and the simulator's control API.

pub(crate) mod control_api;
pub(crate) mod discord_api;
pub(crate) mod oauth_api;
pub(crate) mod ratelimit;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde_json::json;

use crate::state::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    discord_api::routes()
        .merge(oauth_api::routes())
        .merge(control_api::routes())
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"message": "404: Not Found", "code": 0})),
            )
                .into_response()
        })
        .with_state(shared)
}
