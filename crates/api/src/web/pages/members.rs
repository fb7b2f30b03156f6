//! Members: a filtered, paged list and one member's standing under every
//! rule, with the requirement that failed ("balance 5 (needs 10)").

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use domain::members;
use maud::{html, Markup};
use serde::Deserialize;
use store::repo::MemberFilter;
use wire::{RoleId, UserId};

use super::layout::{self, Tab};
use super::{when, when_opt};
use crate::routes::members::member_error;
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

const PAGE: i64 = 50;

/// Filters as typed into the form; blanks mean "any".
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MemberQuery {
    /// A Discord user id to jump to.
    #[serde(default)]
    q: String,
    #[serde(default)]
    wallet: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    present: String,
    #[serde(default)]
    after: String,
}

fn tri(value: &str) -> Option<bool> {
    match value {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(query): Query<MemberQuery>,
) -> Result<Response, WebError> {
    let base = m.base();
    let q = query.q.trim();
    if !q.is_empty() {
        return match q.parse::<UserId>() {
            Ok(user) => Ok(Redirect::to(&format!("{base}/members/{user}")).into_response()),
            Err(_) => Err(WebError::BadRequest(format!(
                "{q:?} is not a Discord user id (a number like 1100000000000000042)"
            ))),
        };
    }
    let holds_role = match query.role.trim() {
        "" => None,
        r => Some(
            r.parse::<RoleId>()
                .map_err(|_| WebError::BadRequest(format!("{r:?} is not a Discord role id")))?,
        ),
    };
    let after = match query.after.trim() {
        "" => None,
        a => Some(
            a.parse::<UserId>()
                .map_err(|_| WebError::BadRequest("that page link is broken".to_owned()))?,
        ),
    };
    let filter = MemberFilter {
        after,
        has_wallet: tri(&query.wallet),
        holds_role,
        failing_rule: None,
        present: tri(&query.present),
        limit: PAGE,
    };
    let page = members::list(state.store(), m.community, &filter)
        .await
        .map_err(member_error)?;
    let next = (page.len() as i64 == PAGE)
        .then(|| page.last().map(|p| p.discord_user_id))
        .flatten();
    let next_link = next.map(|n| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        url.append_pair("wallet", &query.wallet)
            .append_pair("role", &query.role)
            .append_pair("present", &query.present)
            .append_pair("after", &n.to_string());
        format!("{base}/members?{}", url.finish())
    });
    let select = |name: &str, value: &str, label: &str| {
        html! {
            label { (label)
                select name=(name) {
                    option value="" selected[value.is_empty()] { "any" }
                    option value="yes" selected[value == "yes"] { "yes" }
                    option value="no" selected[value == "no"] { "no" }
                }
            }
        }
    };
    Ok(layout::community_page(
        &m,
        Tab::Members,
        "Members",
        html! {
            h1 { "Members" }
            form.filters method="get" action={ (base) "/members" } {
                label { "Find by user id" input name="q" #member-q value=(query.q) placeholder="Discord user id"; }
                (select("wallet", &query.wallet, "Has a wallet"))
                label { "Holds role" input name="role" value=(query.role) placeholder="role id"; }
                (select("present", &query.present, "In the server"))
                button type="submit" { "Filter" }
            }
            @if page.is_empty() {
                p.empty { "No member matches." }
            } @else {
                table.data #members {
                    thead { tr { th { "User" } th { "Wallet" } th { "Score" } th { "Roles" } th { "Joined" } th { "State" } } }
                    tbody {
                        @for p in &page {
                            tr {
                                td { a href={ (base) "/members/" (p.discord_user_id) } { (p.discord_user_id) } }
                                td { @if p.wallets.is_empty() { span.muted { "none" } } @else { @for w in &p.wallets { code.small { (w.as_str()) } " " } } }
                                td.num { (p.score) }
                                td { (p.role_ids.len()) }
                                td { (when_opt(p.joined_at)) }
                                td { @if p.left_at.is_some() { span.pill { "left" } } @else { span.pill.ok { "present" } } }
                            }
                        }
                    }
                }
            }
            @if let Some(link) = next_link { p { a.button href=(link) #next-page { "Next page →" } } }
        },
    )
    .into_response())
}

pub(crate) async fn detail(State(state): State<AppState>, m: Managed) -> Result<Markup, WebError> {
    let user = m
        .param("user")?
        .parse::<UserId>()
        .map_err(|_| WebError::NotFound)?;
    let detail = members::detail(state.store(), m.community, user)
        .await
        .map_err(member_error)?;
    let now = Utc::now();
    let period = state.0.settings.recheck_period;
    let p = &detail.profile;
    Ok(layout::community_page(
        &m,
        Tab::Members,
        "Member",
        html! {
            h1 { "Member " (p.discord_user_id) }
            table.kv #member {
                tr { th { "Wallets" } td { @if p.wallets.is_empty() { "none linked" } @else { @for w in &p.wallets { code { (w.as_str()) } br; } } } }
                tr { th { "Score" } td { (p.score) } }
                tr { th { "Tier" } td { (p.tier) } }
                tr { th { "Joined" } td { (when_opt(p.joined_at)) } }
                @if let Some(left) = p.left_at { tr { th { "Left" } td { (when(left)) } } }
                tr { th { "Next check" } td { (when_opt(p.next_check_at)) } }
                tr { th { "Roles held" } td { @for r in &p.role_ids { code.chip { (r) } " " } } }
            }
            h2 { "Rules" }
            @if detail.rules.is_empty() {
                p.empty { "The community has no rules." }
            } @else {
                table.data #standing {
                    thead { tr { th { "Role" } th { "Rule" } th { "Outcome" } th { "Why" } th { "Checked" } th { "Holds role" } } }
                    tbody {
                        @for s in &detail.rules {
                            @let grant = s.grant.as_ref();
                            @let (outcome, class) = match grant.map(|g| g.eligible) {
                                None => ("never checked", ""),
                                Some(None) => ("undecided", "warn"),
                                Some(Some(true)) => ("eligible", "ok"),
                                Some(Some(false)) => ("not eligible", "bad"),
                            };
                            tr data-rule=(s.rule.id) {
                                td { code { (s.rule.role_discord_id) } }
                                td { (s.rule.rule_type.as_str()) @if !s.rule.enabled { span.muted { " (disabled)" } } }
                                td { span.pill.(class) { (outcome) } @if s.is_stale(period, now) { " " span.pill.warn { "stale" } } }
                                td.why { (grant.map_or("", |g| g.detail.as_str())) }
                                td { (when_opt(grant.map(|g| g.checked_at))) }
                                td { @if p.role_ids.contains(&s.rule.role_discord_id) { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
            h2 { "Badges" }
            @if detail.badges.is_empty() {
                p.empty { "No badges." }
            } @else {
                ul { @for b in &detail.badges { li { strong { (b.badge.name) } " (" code { (b.badge.slug) } ") — " (b.reason) ", " (when(b.awarded_at)) } } }
            }
        },
    ))
}
