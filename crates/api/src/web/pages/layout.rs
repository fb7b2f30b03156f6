//! The frame every page shares. maud escapes every interpolated value, so
//! names, ids and messages from members or Discord cannot become markup.

use maud::{html, Markup, DOCTYPE};

use super::super::csrf;
use super::super::session::{Admin, Managed};

/// The tabs of a community's pages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Overview,
    Rules,
    Members,
    Badges,
    Audit,
    Keys,
    Webhooks,
}

const TABS: &[(Tab, &str, &str)] = &[
    (Tab::Overview, "", "Overview"),
    (Tab::Rules, "/rules", "Rules"),
    (Tab::Members, "/members", "Members"),
    (Tab::Badges, "/badges", "Badges"),
    (Tab::Audit, "/audit", "Audit log"),
    (Tab::Keys, "/keys", "API keys"),
    (Tab::Webhooks, "/webhooks", "Webhooks"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Gatehouse" }
            link rel="stylesheet" href="/assets/dashboard.css";
            script src="/assets/dashboard.js" defer {}
        }
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(admin: &Admin) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(admin.csrf); }
}

/// A one-button form that POSTs to `action` (enable, delete, revoke, …).
pub(crate) fn button_form(admin: &Admin, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(admin))
            button.(class) type="submit" { (label) }
        }
    }
}

fn top_bar(admin: Option<&Admin>) -> Markup {
    html! {
        header.top {
            a.brand href="/dashboard" { "Gatehouse" }
            @if let Some(admin) = admin {
                span.who { "Signed in as " strong { (admin.name) } " (" (admin.user) ")" }
                form.inline method="post" action="/logout" {
                    (csrf_field(admin))
                    button.link type="submit" id="logout" { "Log out" }
                }
            }
        }
    }
}

/// A page outside any community (the list, login, errors).
pub(crate) fn page(title: &str, admin: Option<&Admin>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                (top_bar(admin))
                main { (body) }
            }
        }
    }
}

/// A page of one community, with its tabs.
pub(crate) fn community_page(m: &Managed, tab: Tab, title: &str, body: Markup) -> Markup {
    let base = m.base();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                (top_bar(Some(&m.admin)))
                nav.tabs {
                    span.community { (m.name) }
                    @for (t, path, label) in TABS {
                        a.active[*t == tab] href={ (base) (path) } { (label) }
                    }
                }
                @if !m.admin.permissions_current {
                    p.banner.warn { "Discord could not be reached to re-check your permissions: you can look, but changes are paused until it answers." }
                }
                main { (body) }
            }
        }
    }
}

pub(crate) fn login_page(message: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            section.login {
                h1 { "Gatehouse dashboard" }
                p { "Manage your community's token-gated roles, badges and webhooks." }
                @if let Some(message) = message {
                    p.banner.error role="alert" { (message) }
                }
                // A link, not a form: the CSP's form-action would stop a
                // form's redirect to Discord.
                a.button.primary id="login" href="/login/start" { "Log in with Discord" }
                p.muted { "You will see the servers where you hold Administrator or Manage Server and where the Gatehouse bot is present." }
            }
        },
    )
}

pub(crate) fn error_page(title: &str, message: &str) -> Markup {
    page(
        title,
        None,
        html! {
            h1 { (title) }
            p.banner.error role="alert" { (message) }
            p { a href="/dashboard" { "Back to your communities" } }
        },
    )
}

/// A notice at the top of a page after a change.
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.banner.ok role="status" { (text) }
        }
    }
}
