//! The communities a person may administer, and each one's overview with
//! its sync status (refreshed by a small script while work is pending).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Serialize;

use super::layout::{self, Tab};
use super::when_opt;
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::{Admin, Managed};

pub(crate) async fn list(State(state): State<AppState>, admin: Admin) -> Result<Markup, WebError> {
    let communities = admin.communities(&state).await?;
    Ok(layout::page(
        "Your communities",
        Some(&admin),
        html! {
            h1 { "Your communities" }
            @if communities.is_empty() {
                p.empty #no-communities {
                    "No community to manage. You see a server here when you hold Administrator or Manage Server in it (or own it) and the Gatehouse bot is there."
                }
            } @else {
                ul.cards #communities {
                    @for c in &communities {
                        li {
                            a href={ "/dashboard/" (c.guild) } id={ "community-" (c.guild) } {
                                strong { (c.name) }
                                span.muted { " server " (c.guild) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Serialize)]
pub(crate) struct SyncView {
    members: i64,
    due: i64,
    in_flight: i64,
    changes_pending: i64,
    changes_applied_last_hour: i64,
    discord_429s_last_hour: i64,
    last_pass_at: String,
    /// Whether work is outstanding: the page keeps polling while it is.
    busy: bool,
    /// Share of present members whose check is not due, 0–100.
    percent_done: i64,
}

async fn sync_view(state: &AppState, m: &Managed) -> Result<SyncView, WebError> {
    let s = domain::community::sync_status(state.store(), m.community).await?;
    let done = if s.members > 0 {
        ((s.members - s.due).max(0) * 100) / s.members
    } else {
        100
    };
    Ok(SyncView {
        members: s.members,
        due: s.due,
        in_flight: s.in_flight,
        changes_pending: s.changes_pending,
        changes_applied_last_hour: s.changes_applied_last_hour,
        discord_429s_last_hour: s.discord_429s_last_hour,
        last_pass_at: when_opt(s.last_pass_at),
        busy: s.due > 0 || s.in_flight > 0 || s.changes_pending > 0,
        percent_done: done,
    })
}

pub(crate) async fn overview(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Markup, WebError> {
    let sync = sync_view(&state, &m).await?;
    let rules = domain::rules::list(state.store(), m.community)
        .await
        .map_err(crate::routes::rules::rule_error)?;
    let enabled = rules.iter().filter(|r| r.enabled).count();
    let base = m.base();
    Ok(layout::community_page(
        &m,
        Tab::Overview,
        &m.name,
        html! {
            h1 { (m.name) }
            section.sync #sync data-src={ (base) "/sync.json" } data-busy=(sync.busy) {
                h2 { "Role sync" }
                progress #sync-progress max="100" value=(sync.percent_done) { (sync.percent_done) "%" }
                p #sync-summary {
                    span data-field="percent_done" { (sync.percent_done) } "% of members checked under the current rules"
                    @if sync.busy { span.muted #sync-busy { " — working; this page updates by itself" } }
                }
                table.kv {
                    tr { th { "Members present" } td data-field="members" { (sync.members) } }
                    tr { th { "Checks due" } td data-field="due" { (sync.due) } }
                    tr { th { "Checking now" } td data-field="in_flight" { (sync.in_flight) } }
                    tr { th { "Role changes queued" } td data-field="changes_pending" { (sync.changes_pending) } }
                    tr { th { "Role changes in the last hour" } td data-field="changes_applied_last_hour" { (sync.changes_applied_last_hour) } }
                    tr { th { "Discord rate limits in the last hour" } td data-field="discord_429s_last_hour" { (sync.discord_429s_last_hour) } }
                    tr { th { "Last full re-check" } td data-field="last_pass_at" { (sync.last_pass_at) } }
                }
            }
            section {
                h2 { "Rules" }
                p { (rules.len()) " rules, " (enabled) " enabled. " a href={ (base) "/rules" } { "Manage rules" } }
            }
        },
    ))
}

/// The sync status as JSON, for the overview's progress poll.
pub(crate) async fn sync_json(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    Ok(axum::Json(sync_view(&state, &m).await?).into_response())
}
