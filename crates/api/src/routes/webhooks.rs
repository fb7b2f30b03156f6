use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::keys::Scope;
use domain::webhooks::{
    self, NewWebhook, UrlPolicy, Webhook, WebhookError, WebhookEvent, WebhookId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: uuid::Uuid,
    pub url: String,
    /// `role.granted`, `role.removed`, `wallet.linked`, `wallet.unlinked`,
    /// `member.joined`, `member.left`, `rule.changed`.
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: *w.id.as_uuid(),
            url: w.url,
            events: w.events.iter().map(|e| e.as_str().to_owned()).collect(),
            description: w.description,
            active: w.active,
            created_at: w.created_at,
        }
    }
}

/// A webhook just registered: the only response that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredView {
    pub webhook: WebhookView,
    /// The HMAC-SHA256 key of the `Gatehouse-Signature` header
    /// (docs/api.md). Shown once.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// An `https://` URL.
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The `Gatehouse-Delivery` header and the body's `id`: the same on
    /// every attempt, so receivers can drop repeats.
    pub delivery_id: uuid::Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (dead-lettered after the last attempt).
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub before: Option<i64>,
    /// 1 to 100 (default 50).
    pub limit: Option<u32>,
}

pub(crate) fn webhook_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Invalid { field, problem } => {
            ApiError::field(field, problem.clone(), expected(field))
        }
        WebhookError::NotFound(_) => ApiError::not_found("no such webhook"),
        e @ WebhookError::TooMany { .. } => ApiError::conflict(e.to_string()),
        WebhookError::Store(e) => e.into(),
    }
}

fn expected(field: &str) -> String {
    match field {
        "url" => "an https:// URL without credentials, to a public address, not registered yet"
            .to_owned(),
        "events" => format!(
            "one or more of {}",
            WebhookEvent::ALL
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "description" => format!("at most {} characters", webhooks::MAX_DESCRIPTION_LEN),
        "limit" => format!("1 to {}", webhooks::MAX_PAGE),
        _ => "a valid value".to_owned(),
    }
}

/// The community's webhooks (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    responses((status = 200, body = Vec<WebhookView>)), security(("api_key" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<WebhookView>>, ApiError> {
    caller.require(Scope::Read)?;
    let hooks = webhooks::list(state.store(), caller.community())
        .await
        .map_err(webhook_error)?;
    Ok(axum::Json(
        hooks.into_iter().map(WebhookView::from).collect(),
    ))
}

/// Register an endpoint. Deliveries are signed with the returned secret,
/// retried with backoff, and dead-lettered after the last attempt.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "registerWebhook",
    request_body = WebhookInput,
    responses((status = 201, body = RegisteredView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<WebhookInput>,
) -> Result<(StatusCode, axum::Json<RegisteredView>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let mut events = Vec::new();
    let mut unknown = Vec::new();
    for name in &input.events {
        match name.parse::<WebhookEvent>() {
            Ok(event) => events.push(event),
            Err(_) => unknown.push(format!("{name:?}")),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::field(
            "events",
            format!("unknown event(s) {}", unknown.join(", ")),
            expected("events"),
        ));
    }
    let policy = UrlPolicy {
        allow_insecure_loopback: state.0.settings.webhooks_allow_insecure_loopback,
    };
    let registered = webhooks::register(
        state.store(),
        caller.community(),
        &caller.actor(),
        &NewWebhook {
            url: input.url,
            events,
            description: input.description,
        },
        &policy,
    )
    .await
    .map_err(webhook_error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RegisteredView {
            webhook: registered.webhook.into(),
            secret: registered.secret.expose().to_owned(),
        }),
    ))
}

fn webhook_id(raw: uuid::Uuid) -> WebhookId {
    WebhookId::from(raw)
}

/// Remove an endpoint; its pending deliveries are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    webhooks::delete(
        state.store(),
        caller.community(),
        &caller.actor(),
        webhook_id(id),
    )
    .await
    .map_err(webhook_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's delivery log, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = uuid::Uuid, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 404, body = ErrorBody)),
    security(("api_key" = ["read"])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
    Query(query): Query<DeliveryQuery>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    caller.require(Scope::Read)?;
    let limit = query.limit.unwrap_or(50);
    let page = webhooks::deliveries(
        state.store(),
        caller.community(),
        webhook_id(id),
        query.before,
        limit,
    )
    .await
    .map_err(|e| match e {
        // Paging parameters are query parameters: 400, like the other lists.
        WebhookError::Invalid { field, problem } => {
            ApiError::invalid(format!("{field}: {problem}"))
        }
        other => webhook_error(other),
    })?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|d| d.id))
        .flatten();
    Ok(axum::Json(DeliveryPage {
        deliveries: page
            .into_iter()
            .map(|d| DeliveryView {
                id: d.id,
                delivery_id: d.public_id,
                event_type: d.event_type,
                state: d.state.as_str().to_owned(),
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error,
                created_at: d.created_at,
                last_attempt_at: d.last_attempt_at,
                finished_at: d.finished_at,
            })
            .collect(),
        next,
    }))
}
