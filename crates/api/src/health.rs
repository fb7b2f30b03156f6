//! Probes and metrics, outside `/v1` and without a key.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Requests answered, by `method`, `route` (the matched pattern, or
/// `unmatched`) and `status`.
pub const REQUESTS: &str = "api_requests_total";
/// Time from a request arriving to its response, by `method` and `route`:
/// a histogram, so that dashboards and alerts can add up the buckets of
/// every API process (a summary's quantiles cannot be combined).
pub const REQUEST_SECONDS: &str = "api_request_duration_seconds";

/// From a cached read to a request cut off by the deadline
/// (`API_REQUEST_TIMEOUT`, 10 s by default) or waiting on a slow chain.
const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder once. If another recorder was
/// installed first (an embedding program's), `/metrics` says so instead.
pub(crate) fn install_recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

fn recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.to_owned()), &REQUEST_BUCKETS)?
        .install_recorder()
}

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: the database answers through the pool and NATS
/// is connected (re-check requests go there).
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.store().ping().await;
    let nats = state.0.nats.connection_state();
    match (db, nats) {
        (Ok(()), async_nats::connection::State::Connected) => (StatusCode::OK, "ready".to_owned()),
        (Err(e), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
        (Ok(()), other) => (StatusCode::SERVICE_UNAVAILABLE, format!("nats: {other:?}")),
    }
}

pub async fn metrics() -> impl IntoResponse {
    match install_recorder() {
        Some(handle) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            {
                // Without upkeep, histogram samples pile up until a render
                // drains them.
                handle.run_upkeep();
                handle.render()
            },
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            "metrics recorder not installed".to_owned(),
        ),
    }
}
