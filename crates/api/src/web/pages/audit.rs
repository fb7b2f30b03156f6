//! The audit log, newest first, a page at a time.

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;
use store::repo::AuditFilter;

use super::layout::{self, Tab};
use super::when;
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    before: Option<i64>,
    #[serde(default)]
    action: String,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(query): Query<AuditQuery>,
) -> Result<Markup, WebError> {
    let action = query.action.trim().to_owned();
    let filter = AuditFilter {
        before: query.before,
        action: (!action.is_empty()).then(|| action.clone()),
        actor_type: None,
        actor_id: None,
        target_id: None,
        since: None,
        until: None,
        limit: PAGE,
    };
    let records = domain::audit::page(state.store(), m.community, &filter).await?;
    let next = (records.len() as i64 == PAGE)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    let base = m.base();
    Ok(layout::community_page(
        &m,
        Tab::Audit,
        "Audit log",
        html! {
            h1 { "Audit log" }
            form.filters method="get" action={ (base) "/audit" } {
                label { "Action" input name="action" value=(action) placeholder="e.g. rule.created"; }
                button type="submit" { "Filter" }
            }
            @if records.is_empty() {
                p.empty { "Nothing recorded." }
            } @else {
                table.data #audit {
                    thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "Details" } } }
                    tbody {
                        @for r in &records {
                            tr {
                                td { (when(r.created_at)) }
                                td { (r.actor_type.as_str()) @if let Some(id) = &r.actor_id { " " code.small { (id) } } }
                                td { code { (r.action) } }
                                td { (r.target_type.as_deref().unwrap_or("")) " " (r.target_id.as_deref().unwrap_or("")) }
                                td { code.small { (r.metadata.to_string()) } }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                @let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("before", &next.to_string())
                    .append_pair("action", &action)
                    .finish();
                p { a.button href={ (base) "/audit?" (query) } { "Older →" } }
            }
        },
    ))
}
