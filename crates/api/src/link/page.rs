//! The link page's HTML: server-rendered, every value escaped, scripts and
//! styles from `/link-assets/` only (the CSP allows nothing inline).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::link_page::PageView;
use serde::Serialize;
use store::repo::RuleType;

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn layout(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Gatehouse</title>\
         <link rel=\"stylesheet\" href=\"/link-assets/link.css\"></head>\
         <body><main>{main}</main></body></html>\n",
        title = escape(title),
    )
}

/// One rule's role, as the member reads it.
#[derive(Debug, Serialize)]
pub(crate) struct RoleLine {
    pub role_id: String,
    /// What the rule asks, in words.
    pub rule: String,
    /// `held`, `granting` (eligible, the role is on its way),
    /// `not_eligible`, `undecided` or `not_checked`.
    pub state: &'static str,
    /// The last check's reason, e.g. "balance 5 (needs 10)".
    pub detail: String,
}

pub(crate) fn role_lines(view: &PageView) -> Vec<RoleLine> {
    view.rules
        .iter()
        .map(|standing| {
            let rule = &standing.rule;
            let held = view.profile.role_ids.contains(&rule.role_discord_id);
            let (state, detail) = match &standing.grant {
                None => ("not_checked", String::new()),
                Some(g) => {
                    let state = match g.eligible {
                        _ if held => "held",
                        Some(true) => "granting",
                        Some(false) => "not_eligible",
                        None => "undecided",
                    };
                    (state, g.detail.clone())
                }
            };
            RoleLine {
                role_id: rule.role_discord_id.to_string(),
                rule: describe(rule),
                state,
                detail,
            }
        })
        .collect()
}

fn describe(rule: &store::repo::EligibilityRule) -> String {
    let p = &rule.parameters;
    let text = |key: &str| {
        p.get(key).map_or_else(
            || "?".to_owned(),
            |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        )
    };
    // Short, as wallets show addresses: enough to recognise, not to read.
    let contract = rule
        .contract_address
        .as_ref()
        .map(|c| {
            let c = c.as_str();
            format!("{}…{}", &c[..6], &c[c.len() - 4..])
        })
        .unwrap_or_default();
    let chain = rule.chain.clone().unwrap_or_default();
    match rule.rule_type {
        RuleType::TokenBalance => format!(
            "hold at least {} of token {contract} on {chain}",
            text("min_balance")
        ),
        RuleType::NftOwnership => format!(
            "own at least {} NFT of {contract} on {chain}",
            p.get("min_count")
                .map_or_else(|| "1".to_owned(), ToString::to_string)
        ),
        RuleType::ScoreThreshold => format!("a score of at least {}", text("min_score")),
        RuleType::Custom => "a combination of other rules".to_owned(),
    }
}

fn state_words(state: &str) -> &'static str {
    match state {
        "held" => "you hold this role",
        "granting" => "eligible: the role is on its way",
        "not_eligible" => "not eligible",
        "undecided" => "could not be decided just now",
        _ => "not checked yet",
    }
}

/// The page for a usable (or just used) link.
pub(super) fn link(view: &PageView, domain: &str) -> String {
    let wallets = if view.wallets.is_empty() {
        "<p id=\"no-wallets\">No wallet linked yet.</p>".to_owned()
    } else {
        let items: String = view
            .wallets
            .iter()
            .map(|w| {
                let address = escape(w.address.as_str());
                format!(
                    "<li><code>{address}</code> <button type=\"button\" class=\"unlink\" \
                     data-address=\"{address}\">Unlink</button></li>"
                )
            })
            .collect();
        format!("<ul id=\"wallets\">{items}</ul>")
    };
    let roles: String = role_lines(view)
        .iter()
        .map(|r| {
            format!(
                "<tr data-state=\"{state}\"><td>Role <code>{role}</code></td><td>{rule}</td>\
                 <td>{words}</td><td>{detail}</td></tr>",
                state = r.state,
                role = escape(&r.role_id),
                rule = escape(&r.rule),
                words = state_words(r.state),
                detail = escape(&r.detail),
            )
        })
        .collect();
    let roles = if roles.is_empty() {
        "<p>This server has no role rules yet.</p>".to_owned()
    } else {
        format!(
            "<table id=\"roles\"><thead><tr><th>Role</th><th>Needs</th><th>Now</th><th>Why</th></tr></thead>\
             <tbody>{roles}</tbody></table>"
        )
    };
    let used = view.holder.used_at.is_some();
    let main = format!(
        "<h1>Link a wallet</h1>\
         <p class=\"who\">For Discord user <code>{user}</code> in <strong>{server}</strong>.</p>\
         <section id=\"link\" data-used=\"{used}\">\
           <p>Your browser wallet will ask you to sign a message that names this site, \
              <strong>{domain}</strong>. Signing costs nothing and moves no funds. \
              Check the site name in your wallet before you sign.</p>\
           <button id=\"connect\" type=\"button\"{disabled}>Connect wallet and sign</button>\
           <p id=\"status\" role=\"status\" aria-live=\"polite\">{status}</p>\
         </section>\
         <h2>Your wallets</h2>{wallets}\
         <p class=\"hint\">Holdings count across all your wallets. Unlinking one takes away \
            what it earned at once. <code>/wallets</code> in Discord lists them too.</p>\
         <h2>Roles from this server's rules</h2>{roles}\
         <p class=\"hint\">This link works once and expires at {expires} (UTC). \
            Run <code>/link-wallet</code> again for a new one.</p>\
         <script src=\"/link-assets/link.js\"></script>",
        user = escape(&view.holder.user.to_string()),
        server = escape(&view.community_name),
        domain = escape(domain),
        disabled = if used { " disabled" } else { "" },
        status = if used {
            "This link was used: a wallet was linked. Run /link-wallet again to link another."
        } else {
            ""
        },
        expires = view.holder.expires_at.format("%Y-%m-%d %H:%M"),
    );
    layout("Link a wallet", &main)
}

/// A page that only says why the link cannot be used.
pub(super) fn refused(why: &str) -> String {
    let mut text = why.to_owned();
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    layout(
        "Link a wallet",
        &format!(
            "<h1>Link a wallet</h1><p id=\"error\" class=\"error\">{}.</p>",
            escape(&text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn a_refusal_page_names_the_reason() {
        let page = refused("this link has expired: run /link-wallet in Discord for a new one");
        assert!(page.contains("This link has expired"));
        assert!(!page.contains("<script>"));
    }
}
