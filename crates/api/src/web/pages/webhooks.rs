//! Webhooks: register (the signing secret is shown once), list, delete,
//! and each one's deliveries.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::webhooks::{self, NewWebhook, UrlPolicy, WebhookEvent, WebhookId};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, csrf_field, Tab};
use super::{when, when_opt};
use crate::routes::webhooks::webhook_error;
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

async fn page(
    state: &AppState,
    m: &Managed,
    notice: Option<&str>,
    secret: Option<&str>,
) -> Result<Markup, WebError> {
    let hooks = webhooks::list(state.store(), m.community)
        .await
        .map_err(webhook_error)?;
    let base = m.base();
    Ok(layout::community_page(
        m,
        Tab::Webhooks,
        "Webhooks",
        html! {
            h1 { "Webhooks" }
            (layout::notice(notice))
            @if let Some(secret) = secret {
                div.banner.ok #new-webhook {
                    p { "The signing secret — copy it now, it will not be shown again:" }
                    p { code.secret { (secret) } }
                }
            }
            @if hooks.is_empty() {
                p.empty { "No webhooks." }
            } @else {
                table.data #webhooks {
                    thead { tr { th { "URL" } th { "Events" } th { "Description" } th { "Created" } th {} } }
                    tbody {
                        @for h in &hooks {
                            tr {
                                td { code.small { (h.url) } }
                                td { (h.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")) }
                                td { (h.description) }
                                td { (when(h.created_at)) }
                                td.actions {
                                    a.button href={ (base) "/webhooks/" (h.id) "/deliveries" } { "Deliveries" }
                                    form.inline method="post" action={ (base) "/webhooks/" (h.id) "/delete" } data-confirm="Delete this webhook? Pending deliveries are dropped." {
                                        (csrf_field(&m.admin))
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Register a webhook" }
            form.rule method="post" action={ (base) "/webhooks" } {
                (csrf_field(&m.admin))
                label { "URL" input name="url" type="url" required placeholder="https://example.com/gatehouse"; }
                fieldset {
                    legend { "Events" }
                    @for e in WebhookEvent::ALL {
                        label.check { input type="checkbox" name="event" value=(e.as_str()); " " (e.as_str()) }
                    }
                }
                label { "Description" input name="description"; }
                button.primary type="submit" { "Register" }
            }
        },
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(done): Query<Done>,
) -> Result<Markup, WebError> {
    let notice = (done.done.as_deref() == Some("deleted")).then_some("Webhook deleted.");
    page(&state, &m, notice, None).await
}

pub(crate) async fn register(
    State(state): State<AppState>,
    m: Managed,
    body: String,
) -> Result<Response, WebError> {
    let mut url = String::new();
    let mut description = String::new();
    let mut events = Vec::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        match &*k {
            "url" => url = v.trim().to_owned(),
            "description" => description = v.trim().to_owned(),
            "event" => events.push(
                v.parse::<WebhookEvent>()
                    .map_err(|e| WebError::BadRequest(format!("events: {e}")))?,
            ),
            _ => {}
        }
    }
    let policy = UrlPolicy {
        allow_insecure_loopback: state.0.settings.webhooks_allow_insecure_loopback,
    };
    let registered = webhooks::register(
        state.store(),
        m.community,
        &m.actor(),
        &NewWebhook {
            url,
            events,
            description,
        },
        &policy,
    )
    .await
    .map_err(webhook_error)?;
    Ok((
        StatusCode::CREATED,
        page(
            &state,
            &m,
            Some("Webhook registered."),
            Some(registered.secret.expose()),
        )
        .await?,
    )
        .into_response())
}

fn hook_id(m: &Managed) -> Result<WebhookId, WebError> {
    m.param("hook")?
        .parse::<uuid::Uuid>()
        .map(WebhookId::from)
        .map_err(|_| WebError::NotFound)
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    webhooks::delete(state.store(), m.community, &m.actor(), hook_id(&m)?)
        .await
        .map_err(webhook_error)?;
    Ok(Redirect::to(&format!("{}/webhooks?done=deleted", m.base())).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeliveryQuery {
    before: Option<i64>,
}

pub(crate) async fn deliveries(
    State(state): State<AppState>,
    m: Managed,
    Query(query): Query<DeliveryQuery>,
) -> Result<Markup, WebError> {
    let id = hook_id(&m)?;
    let limit = 50;
    let page = webhooks::deliveries(state.store(), m.community, id, query.before, limit)
        .await
        .map_err(webhook_error)?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|d| d.id))
        .flatten();
    let base = m.base();
    Ok(layout::community_page(
        &m,
        Tab::Webhooks,
        "Deliveries",
        html! {
            h1 { "Deliveries" }
            p { a href={ (base) "/webhooks" } { "← Webhooks" } }
            @if page.is_empty() {
                p.empty { "No deliveries yet." }
            } @else {
                table.data #deliveries {
                    thead { tr { th { "Event" } th { "State" } th { "Attempts" } th { "Last status" } th { "Last error" } th { "Created" } th { "Finished" } } }
                    tbody {
                        @for d in &page {
                            tr {
                                td { code { (d.event_type) } }
                                td { (d.state.as_str()) }
                                td.num { (d.attempts) }
                                td { (d.last_status.map(|s| s.to_string()).unwrap_or_default()) }
                                td { (d.last_error.as_deref().unwrap_or("")) }
                                td { (when(d.created_at)) }
                                td { (when_opt(d.finished_at)) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a.button href={ (base) "/webhooks/" (id) "/deliveries?before=" (next) } { "Older →" } }
            }
        },
    ))
}
