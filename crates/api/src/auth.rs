//! Who is calling: the `Authorization: Bearer ghk_…` key, checked against
//! the database on every request (no cache, so a revoked key is refused from
//! its next request on, in every `api` process), rate-limited per key.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts};
use domain::keys::{self, KeyIdentity, Scope};
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use governor::NotUntil;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated key of a request. Every `/v1` handler takes one, so
/// none can run without a key, and every one acts in the key's community.
pub struct Caller(pub KeyIdentity);

impl Caller {
    /// Refuses the request unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope))
        }
    }

    pub fn community(&self) -> domain::CommunityRef {
        self.0.community
    }

    pub fn actor(&self) -> domain::Actor {
        self.0.actor()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let prefix = keys::public_prefix(presented).ok_or_else(ApiError::unauthorized)?;
        // Before the lookup, the peer's budget: a flood of made-up keys from
        // one address stops costing the database anything once over it.
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            state
                .0
                .per_peer
                .check_key(&peer.ip())
                .map_err(|not_until| limited(&not_until, "peer"))?;
        }
        let identity = keys::authenticate(&state.0.store, presented)
            .await
            .map_err(|e| match e {
                keys::KeyError::Store(e) => ApiError::from(e),
                other => ApiError::internal(&other),
            })?
            .ok_or_else(ApiError::unauthorized)?;
        tracing::Span::current().record("key", tracing::field::display(prefix));
        // Only a request that proved the key spends the key's budget.
        state
            .0
            .per_key
            .check_key(&identity.key)
            .map_err(|not_until| limited(&not_until, "key"))?;
        Ok(Caller(identity))
    }
}

fn limited(not_until: &NotUntil<QuantaInstant>, budget: &'static str) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    metrics::counter!("api_rate_limited_total", "budget" => budget).increment(1);
    ApiError::rate_limited(wait.as_secs_f64().ceil() as u64)
}
