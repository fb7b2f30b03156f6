//! `/healthz`, `/readyz` and `/metrics` of a worker process.
//!
//! A worker answers no other HTTP: its work comes from JetStream. These are
//! for the process supervisor (liveness, readiness) and for Prometheus.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::WorkerError;

/// How long `/readyz` waits for the database. Below the usual probe
/// timeouts, so that a pool that is exhausted or a database that hangs
/// reads as "not ready" with a reason rather than as a probe timeout.
const DATABASE_ANSWER_WITHIN: Duration = Duration::from_millis(900);

/// A bound listener for a worker's HTTP endpoints. Bound before the worker
/// runs, so that a bad or taken address fails at start, and so that with
/// port 0 the chosen port is known up front.
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl HttpListener {
    /// Binds `addr`; port 0 picks a free port (see
    /// [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr) -> Result<HttpListener, WorkerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| WorkerError::HttpBind { addr, error })?;
        let bound = listener
            .local_addr()
            .map_err(|error| WorkerError::HttpBind { addr, error })?;
        Ok(HttpListener {
            listener,
            addr: bound,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What `/readyz` looks at.
pub(crate) struct Readiness {
    nats: async_nats::Client,
    store: store::Store,
    consumers_bound: AtomicBool,
    shutdown: CancellationToken,
}

impl Readiness {
    pub(crate) fn new(
        nats: async_nats::Client,
        store: store::Store,
        shutdown: CancellationToken,
    ) -> Readiness {
        Readiness {
            nats,
            store,
            consumers_bound: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Every durable consumer exists and is being pulled from.
    pub(crate) fn consumers_bound(&self) {
        self.consumers_bound.store(true, Ordering::Release);
    }

    /// `Err` names every part that is not ready, on one line.
    async fn check(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".to_owned());
        }
        let mut problems = Vec::new();
        match self.nats.connection_state() {
            async_nats::connection::State::Connected => {}
            other => problems.push(format!("nats: {other}")),
        }
        match tokio::time::timeout(DATABASE_ANSWER_WITHIN, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("database: {e}")),
            Err(_) => problems.push(format!(
                "database: no answer within {DATABASE_ANSWER_WITHIN:?} (down, or every pooled connection busy)"
            )),
        }
        if !self.consumers_bound.load(Ordering::Acquire) {
            problems.push("consumers: not bound yet".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            // A probe's log and `curl` show the first line only.
            Err(problems.join("; ").replace(['\n', '\r'], " "))
        }
    }
}

fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// 200 when NATS is connected, the database answers and every consumer is
/// bound; else 503 with what is missing.
async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics() -> impl IntoResponse {
    match crate::telemetry::render() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "this process records metrics with another recorder; the worker cannot export them\n"
                .to_owned(),
        ),
    }
}

/// Serves until `shutdown`, then lets in-flight requests finish.
pub(crate) async fn serve(
    listener: HttpListener,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let served = axum::serve(listener.listener, router(readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        // Probes failing will say so too; the worker's work goes on.
        tracing::warn!(%error, addr = %listener.addr, "health and metrics HTTP server stopped");
    }
    Ok(())
}
