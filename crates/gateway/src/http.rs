//! `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::status::Status;
use crate::GatewayError;

pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status)
}

/// 200 when every owned shard is connected and NATS is connected, else 503;
/// the body says which part is missing.
async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let readiness = status.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// Binds `addr` (port 0 picks one) and serves until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), GatewayError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::HttpBind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| GatewayError::HttpBind { addr, source })?;
    let app = router(status);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "health and metrics HTTP server stopped");
        }
    });
    Ok((bound, task))
}
