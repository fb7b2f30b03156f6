//! Gatehouse's admin REST API: each community's own way in.
//!
//! A front end like the CLI and the slash commands: every operation is the
//! `domain` crate's, called inside the tenant transaction of the request's
//! API key, so a key can never see or touch another community (a resource
//! of another community answers 404, exactly like one that does not
//! exist). Stateless: any number of `api` processes serve the same
//! communities behind a load balancer.
//!
//! Around the handlers, in order: a request id (`x-request-id`, taken from
//! the caller or made, returned on every response and put on every log
//! line), a trace span, metrics, a timeout and body size limits. Keys are
//! rate-limited per key (a token bucket; 429 with `Retry-After`).

mod auth;
mod error;
mod extract;
mod health;
mod link;
pub mod openapi;
mod rechecks;
mod routes;
mod state;
mod web;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ErrorBody, FieldProblem};
pub use rechecks::BusRechecks;
pub use state::{ApiSettings, AppState};
pub use web::{DashboardError, DashboardSettings, ADMINISTRATOR, DISCORD_URL, MANAGE_GUILD};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// JSON bodies: rules, badges, settings. Generous for a rule, far from
/// anything that costs memory.
const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Score imports: 50,000 rows of CSV fit comfortably.
const IMPORT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The whole application: `/v1` endpoints, probes, metrics and the OpenAPI
/// document.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/community",
            get(routes::community::get).patch(routes::community::patch),
        )
        .route(
            "/rules",
            get(routes::rules::list).post(routes::rules::create),
        )
        .route("/rules/preview", post(routes::rules::preview))
        .route(
            "/rules/{id}",
            get(routes::rules::get)
                .put(routes::rules::update)
                .delete(routes::rules::delete),
        )
        .route("/rules/{id}/enable", post(routes::rules::enable))
        .route("/rules/{id}/disable", post(routes::rules::disable))
        .route("/members", get(routes::members::list))
        .route("/members/{user_id}", get(routes::members::detail))
        .route("/members/{user_id}/recheck", post(routes::members::recheck))
        .route("/members/{user_id}/score", put(routes::scores::set))
        .route(
            "/scores/import",
            post(routes::scores::import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
        .route(
            "/badges",
            get(routes::badges::list).post(routes::badges::define),
        )
        .route(
            "/badges/{slug}/holders/{user_id}",
            put(routes::badges::grant).delete(routes::badges::revoke),
        )
        .route(
            "/webhooks",
            get(routes::webhooks::list).post(routes::webhooks::register),
        )
        .route(
            "/webhooks/{id}",
            axum::routing::delete(routes::webhooks::delete),
        )
        .route(
            "/webhooks/{id}/deliveries",
            get(routes::webhooks::deliveries),
        )
        .route("/audit", get(routes::audit::list))
        .route("/sync-status", get(routes::sync::get))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));

    let timeout = state.0.settings.request_timeout;
    let link = if state.0.settings.public_site.is_some() {
        link::routes()
    } else {
        Router::new()
    };
    let dashboard = if state.dashboard().is_some() {
        web::router(&state)
    } else {
        Router::new()
    };
    Router::new()
        .nest("/v1", v1)
        .merge(link)
        .merge(dashboard)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                request_id = %id,
                method = %req.method(),
                path = %loggable_path(req.uri().path()),
                key = tracing::field::Empty,
            )
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Keys, session cookies: hidden from anything that prints headers.
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .layer(SetSensitiveResponseHeadersLayer::new([
            axum::http::header::SET_COOKIE,
        ]))
        .with_state(state)
}

/// The request path as logs may show it: a wallet-link page's address holds
/// its only credential, so the token is replaced.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/link/") {
        Some(rest) => {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            std::borrow::Cow::Owned(format!("/link/{{token}}{tail}"))
        }
        None => std::borrow::Cow::Borrowed(path),
    }
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; /v1/openapi.json lists them")
}

/// Abandons a request that runs past the deadline, answering 503 in the
/// API's error shape. Dropping the handler's future rolls back its open
/// tenant transaction (the store discards a connection dropped mid-way).
async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "request timed out");
            ApiError::timeout().into_response()
        }
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(health::REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(health::REQUEST_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    health::install_recorder();
    let limiter_state = state.clone();
    // The rate limiters keep a bucket per key and peer they have seen;
    // forget the ones that are full again, so the maps do not grow forever.
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter_state.0.per_key.retain_recent();
            limiter_state.0.per_key.shrink_to_fit();
            limiter_state.0.per_peer.retain_recent();
            limiter_state.0.per_peer.shrink_to_fit();
            web::prune_sessions(&limiter_state).await;
        }
    });
    let app = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn a_link_token_never_reaches_the_logs() {
        let token = "ab".repeat(32);
        assert_eq!(loggable_path(&format!("/link/{token}")), "/link/{token}");
        assert_eq!(
            loggable_path(&format!("/link/{token}/proof")),
            "/link/{token}/proof"
        );
        assert_eq!(
            loggable_path("/link-assets/link.js"),
            "/link-assets/link.js"
        );
        assert_eq!(loggable_path("/v1/members"), "/v1/members");
    }
}
