//! API keys for `/v1`: create (the secret is shown once, on the page that
//! answers the POST), list, revoke — through `domain::keys`.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use domain::keys::{self, KeyError, NewKey, Scope};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, button_form, csrf_field, Tab};
use super::{when, when_opt};
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

fn key_error(e: KeyError) -> WebError {
    match e {
        KeyError::NotFound(_) => WebError::NotFound,
        KeyError::Store(e) => e.into(),
        other => WebError::Refused(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
    }
}

async fn page(
    state: &AppState,
    m: &Managed,
    notice: Option<&str>,
    secret: Option<&str>,
) -> Result<Markup, WebError> {
    let all = keys::list(state.store(), m.community)
        .await
        .map_err(key_error)?;
    let base = m.base();
    Ok(layout::community_page(
        m,
        Tab::Keys,
        "API keys",
        html! {
            h1 { "API keys" }
            (layout::notice(notice))
            @if let Some(secret) = secret {
                div.banner.ok #new-key {
                    p { "Your new key — copy it now, it will not be shown again:" }
                    p { code.secret #key-secret { (secret) } }
                    p.muted.small { "Send it as " code { "Authorization: Bearer …" } " to " code { "/v1" } " (docs/api.md)." }
                }
            }
            @if all.is_empty() {
                p.empty { "No keys." }
            } @else {
                table.data #keys {
                    thead { tr { th { "Name" } th { "Prefix" } th { "Scopes" } th { "Created" } th { "Last used" } th { "State" } th {} } }
                    tbody {
                        @for k in &all {
                            tr {
                                td { (k.name) }
                                td { code { (k.prefix) } }
                                td { (k.scopes.join(", ")) }
                                td { (when(k.created_at)) " " span.muted.small { (k.created_by.as_deref().unwrap_or("")) } }
                                td { (when_opt(k.last_used_at)) }
                                td { @if k.revoked_at.is_some() { span.pill { "revoked" } } @else { span.pill.ok { "active" } } }
                                td { @if k.revoked_at.is_none() { (button_form(&m.admin, &format!("{base}/keys/{}/revoke", k.id), "Revoke", "danger")) } }
                            }
                        }
                    }
                }
            }
            h2 { "Create a key" }
            form.rule method="post" action={ (base) "/keys" } {
                (csrf_field(&m.admin))
                label { "Name" input name="name" required maxlength="100" placeholder="e.g. analytics export"; }
                fieldset {
                    legend { "Scopes" }
                    @for s in Scope::ALL {
                        label.check { input type="checkbox" name="scope" value=(s.as_str()) checked[*s == Scope::Read]; " " (s.as_str()) }
                    }
                }
                button.primary type="submit" { "Create key" }
            }
        },
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(done): Query<Done>,
) -> Result<Markup, WebError> {
    let notice = (done.done.as_deref() == Some("revoked")).then_some("Key revoked.");
    page(&state, &m, notice, None).await
}

pub(crate) async fn create(
    State(state): State<AppState>,
    m: Managed,
    body: String,
) -> Result<Response, WebError> {
    // Repeated `scope` fields: read the pairs rather than a struct.
    let mut name = String::new();
    let mut scopes = BTreeSet::new();
    for (k, v) in url::form_urlencoded::parse(body.as_bytes()) {
        match &*k {
            "name" => name = v.trim().to_owned(),
            "scope" => {
                scopes.insert(v.parse::<Scope>().map_err(key_error)?);
            }
            _ => {}
        }
    }
    let created = keys::create(
        state.store(),
        m.community,
        &m.actor(),
        &NewKey {
            name,
            scopes,
            expires_at: None,
        },
    )
    .await
    .map_err(key_error)?;
    Ok((
        StatusCode::CREATED,
        page(
            &state,
            &m,
            Some("Key created."),
            Some(created.secret.expose()),
        )
        .await?,
    )
        .into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    let id = m
        .param("key")?
        .parse::<uuid::Uuid>()
        .map_err(|_| WebError::NotFound)?;
    keys::revoke(
        state.store(),
        m.community,
        &m.actor(),
        store::ApiKeyId::from(id),
    )
    .await
    .map_err(key_error)?;
    Ok(Redirect::to(&format!("{}/keys?done=revoked", m.base())).into_response())
}
