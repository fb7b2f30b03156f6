//! Probes and metrics, outside `/v1` and without a key.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder once. If another recorder was
/// installed first (an embedding program's), `/metrics` says so instead.
pub(crate) fn install_recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .as_ref()
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
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            "metrics recorder not installed".to_owned(),
        ),
    }
}
