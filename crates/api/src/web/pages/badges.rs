//! Badges: the list with holder counts, defining one, granting and revoking
//! by hand.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use domain::badges;
use maud::{html, Markup};
use serde::Deserialize;
use store::repo::{BadgeEvaluator, NewBadge};

use super::layout::{self, csrf_field, Tab};
use crate::routes::badges::badge_error;
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BadgeForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    evaluator: String,
    #[serde(default)]
    criteria: String,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct HolderForm {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    reason: String,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(done): Query<Done>,
) -> Result<Markup, WebError> {
    let tx = state.store().begin(m.community.tenant).await?;
    let all = badges::list(&tx).await.map_err(badge_error)?;
    tx.commit().await?;
    let base = m.base();
    let notice = match done.done.as_deref() {
        Some("defined") => Some("Badge defined."),
        Some("granted") => Some("Badge granted."),
        Some("revoked") => Some("Badge revoked."),
        Some("unchanged") => Some("Nothing changed: the member already held (or did not hold) it."),
        _ => None,
    };
    Ok(layout::community_page(
        &m,
        Tab::Badges,
        "Badges",
        html! {
            h1 { "Badges" }
            (layout::notice(notice))
            @if all.is_empty() {
                p.empty { "No badges yet." }
            } @else {
                table.data #badges {
                    thead { tr { th { "Badge" } th { "Evaluator" } th { "Criteria" } th { "Holders" } th { "Grant or revoke" } } }
                    tbody {
                        @for b in &all {
                            tr {
                                td { strong { (b.badge.name) } br; code.small { (b.badge.slug) } br; span.muted { (b.badge.description) } }
                                td { (b.badge.evaluator.as_str()) }
                                td { code.small { (b.badge.criteria.to_string()) } }
                                td.num { (b.holders) }
                                td {
                                    form.inline method="post" action={ (base) "/badges/" (b.badge.slug) "/grant" } {
                                        (csrf_field(&m.admin))
                                        input name="user_id" placeholder="user id" size="20" required;
                                        input name="reason" placeholder="reason";
                                        button type="submit" { "Grant" }
                                    }
                                    form.inline method="post" action={ (base) "/badges/" (b.badge.slug) "/revoke" } {
                                        (csrf_field(&m.admin))
                                        input name="user_id" placeholder="user id" size="20" required;
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Define a badge" }
            form.rule method="post" action={ (base) "/badges" } {
                (csrf_field(&m.admin))
                label { "Slug" input name="slug" required placeholder="early-bird"; }
                label { "Name" input name="name" required placeholder="Early bird"; }
                label { "Description" input name="description"; }
                label { "Evaluator"
                    select name="evaluator" {
                        @for e in BadgeEvaluator::ALL { option value=(e.as_str()) { (e.as_str()) } }
                    }
                }
                label { "Criteria (JSON)" textarea name="criteria" rows="3" { "{}" } }
                p.muted.small { "See docs/badges.md for each evaluator's criteria; manual_grant takes {}." }
                button.primary type="submit" { "Define" }
            }
        },
    ))
}

pub(crate) async fn define(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<BadgeForm>,
) -> Result<Response, WebError> {
    let evaluator: BadgeEvaluator = f.evaluator.parse().map_err(|_| {
        WebError::BadRequest(format!("evaluator: {:?} is not an evaluator", f.evaluator))
    })?;
    let criteria = match f.criteria.trim() {
        "" => serde_json::json!({}),
        text => serde_json::from_str(text)
            .map_err(|e| WebError::BadRequest(format!("criteria: not JSON ({e})")))?,
    };
    let badge = NewBadge {
        slug: f.slug.trim().to_owned(),
        name: f.name.trim().to_owned(),
        description: f.description.trim().to_owned(),
        evaluator,
        criteria,
    };
    badges::validate(&badge).map_err(badge_error)?;
    let tx = state.store().begin(m.community.tenant).await?;
    badges::define(&tx, &m.actor(), &badge)
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("{}/badges?done=defined", m.base())).into_response())
}

fn holder(f: &HolderForm) -> Result<wire::UserId, WebError> {
    f.user_id
        .trim()
        .parse()
        .map_err(|_| WebError::BadRequest(format!("{:?} is not a Discord user id", f.user_id)))
}

pub(crate) async fn grant(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<HolderForm>,
) -> Result<Response, WebError> {
    let user = holder(&f)?;
    let slug = m.param("slug")?.to_owned();
    let by = format!("discord:{}", m.admin.user);
    let tx = state.store().begin(m.community.tenant).await?;
    let changed = badges::grant(&tx, &slug, user, &by, f.reason.trim())
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    let done = if changed { "granted" } else { "unchanged" };
    Ok(Redirect::to(&format!("{}/badges?done={done}", m.base())).into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<HolderForm>,
) -> Result<Response, WebError> {
    let user = holder(&f)?;
    let slug = m.param("slug")?.to_owned();
    let tx = state.store().begin(m.community.tenant).await?;
    let changed = badges::revoke(&tx, &m.actor(), &slug, user)
        .await
        .map_err(badge_error)?;
    tx.commit().await?;
    let done = if changed { "revoked" } else { "unchanged" };
    Ok(Redirect::to(&format!("{}/badges?done={done}", m.base())).into_response())
}
