//! The `/v1` endpoints, one module per resource. Each handler authenticates
//! its key ([`Caller`](crate::auth::Caller)), checks the scope, calls the
//! domain and maps the result; none decides anything itself.

pub mod audit;
pub mod badges;
pub mod community;
pub mod members;
pub mod rules;
pub mod scores;
pub mod sync;
pub mod webhooks;

use wire::UserId;

use crate::error::ApiError;

/// The largest page any list returns.
pub const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 100;

/// A page size from a `limit` parameter: 1 to [`MAX_PAGE`].
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::invalid(format!(
            "limit: {n} is out of range; pages hold 1 to {MAX_PAGE} items"
        ))),
    }
}

/// A member's id from a path. One that cannot be a Discord id names no
/// member: 404, like any unknown member.
pub(crate) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such member"))
}

/// The default of JSON object fields a body may leave out.
pub(crate) fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
