//! Rules: the list, and a create/edit form whose only button is
//! **Preview**; the preview page shows who would gain and lose each role
//! (`domain::preview`, nothing written) and carries the **Save** button.
//! Saving validates again: the preview is advice, never a ticket.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use domain::preview::{Preview, RuleChange};
use domain::rules::{self, NewRule};
use maud::{html, Markup};
use serde::Deserialize;
use store::repo::EligibilityRule;
use store::RuleId;

use super::layout::{self, button_form, csrf_field, Tab};
use super::when;
use crate::error::FieldProblem;
use crate::routes::rules::{rule_error, RuleInput};
use crate::state::AppState;
use crate::web::error::WebError;
use crate::web::session::Managed;

const RULE_TYPES: &[(&str, &str)] = &[
    ("token_balance", r#"{"min_balance": "1000000000000000000"}"#),
    ("nft_ownership", r#"{"standard": "erc721", "min_count": 1}"#),
    ("score_threshold", r#"{"min_score": 100}"#),
    (
        "custom",
        r#"{"op": "all", "rules": ["<rule id>", "<rule id>"]}"#,
    ),
];

/// The form as typed: every field a string, so a bad value comes back to
/// the person as they typed it, next to what is wrong with it.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RuleForm {
    #[serde(default)]
    role_id: String,
    #[serde(default)]
    rule_type: String,
    #[serde(default)]
    chain: String,
    #[serde(default)]
    contract_address: String,
    #[serde(default)]
    parameters: String,
    #[serde(default)]
    priority: String,
}

fn blank_to_none(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl RuleForm {
    fn of(rule: &EligibilityRule) -> Self {
        RuleForm {
            role_id: rule.role_discord_id.to_string(),
            rule_type: rule.rule_type.as_str().to_owned(),
            chain: rule.chain.clone().unwrap_or_default(),
            contract_address: rule
                .contract_address
                .as_ref()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            parameters: serde_json::to_string_pretty(&rule.parameters).unwrap_or_default(),
            priority: rule.priority.to_string(),
        }
    }

    /// The validated rule (the `/v1` route's own validation), or every
    /// problem at once.
    fn validate(&self) -> Result<NewRule, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let parameters = match self.parameters.trim() {
            "" => serde_json::json!({}),
            text => serde_json::from_str(text).unwrap_or_else(|e| {
                problems.push(FieldProblem::new(
                    "parameters",
                    format!("is not JSON ({e})"),
                    "a JSON object, e.g. {\"min_score\": 100}",
                ));
                serde_json::json!({})
            }),
        };
        let priority = match self.priority.trim() {
            "" => 0,
            text => text.parse::<i32>().unwrap_or_else(|_| {
                problems.push(FieldProblem::new(
                    "priority",
                    format!("{text:?} is not a whole number"),
                    "a whole number; higher runs first",
                ));
                0
            }),
        };
        let input = RuleInput {
            role_id: self.role_id.trim().to_owned(),
            rule_type: self.rule_type.trim().to_owned(),
            chain: blank_to_none(&self.chain),
            contract_address: blank_to_none(&self.contract_address),
            parameters,
            priority,
        };
        match input.validate() {
            Ok(rule) if problems.is_empty() => Ok(rule),
            Ok(_) => Err(problems),
            Err(e) => {
                problems.extend(e.explain().1.iter().cloned());
                if problems.is_empty() {
                    problems.push(FieldProblem::new("rule", e.explain().0, "a valid rule"));
                }
                Err(problems)
            }
        }
    }
}

fn problem_for<'p>(problems: &'p [FieldProblem], field: &str) -> Vec<&'p FieldProblem> {
    problems
        .iter()
        .filter(|p| p.field == field || p.field.starts_with(&format!("{field}.")))
        .collect()
}

fn field_errors(problems: &[FieldProblem], field: &str) -> Markup {
    html! {
        @for p in problem_for(problems, field) {
            p.field-error { (p.field) ": " (p.problem) " — expected " (p.expected) }
        }
    }
}

/// The form; `action` is where Preview posts.
fn form(m: &Managed, f: &RuleForm, action: &str, problems: &[FieldProblem]) -> Markup {
    let examples: Vec<String> = RULE_TYPES
        .iter()
        .map(|(t, e)| format!("{t}: {e}"))
        .collect();
    html! {
        @if !problems.is_empty() {
            div.banner.error role="alert" #rule-problems {
                p { "The rule is not valid; nothing was stored:" }
                ul { @for p in problems { li { code { (p.field) } " " (p.problem) " — expected " (p.expected) } } }
            }
        }
        form.rule method="post" action=(action) #rule-form {
            (csrf_field(&m.admin))
            label { "Discord role id" input name="role_id" #role_id value=(f.role_id) required placeholder="e.g. 1200000000000000001"; }
            (field_errors(problems, "role_id"))
            label { "Rule type"
                select name="rule_type" #rule_type {
                    @for (t, example) in RULE_TYPES {
                        option value=(t) selected[f.rule_type == *t] data-example=(example) { (t) }
                    }
                }
            }
            (field_errors(problems, "rule_type"))
            label { span { "Chain " span.muted { "(token and NFT rules)" } } input name="chain" #chain value=(f.chain) placeholder="e.g. ethereum"; }
            (field_errors(problems, "chain"))
            label { span { "Contract address " span.muted { "(token and NFT rules)" } } input name="contract_address" #contract_address value=(f.contract_address) placeholder="0x…"; }
            (field_errors(problems, "contract_address"))
            label { "Parameters (JSON)" textarea name="parameters" #parameters rows="4" { (f.parameters) } }
            p.muted.small { "Examples — " (examples.join("; ")) }
            (field_errors(problems, "parameters"))
            label { "Priority" input name="priority" #priority value=(f.priority) inputmode="numeric" placeholder="0"; }
            (field_errors(problems, "priority"))
            button.primary type="submit" #preview { "Preview" }
        }
    }
}

fn preview_table(m: &Managed, p: &Preview) -> Markup {
    let base = m.base();
    html! {
        section.preview #preview-result {
            h2 { "Preview" }
            p { "Evaluated " (p.members) " present members at " (when(p.evaluated_at)) ". Nothing has been saved yet." }
            @if p.stale > 0 {
                p.banner.warn { (p.stale) " members have not been checked within the re-check period; their roles on Discord may still reflect older chain data." }
            }
            @if p.roles.is_empty() {
                p.empty { "This change affects no role." }
            } @else {
                table.data {
                    thead { tr { th { "Role" } th { "Would gain" } th { "Would lose" } th { "Undecided" } th { "Examples" } } }
                    tbody {
                        @for r in &p.roles {
                            tr data-role=(r.role) {
                                td { code { (r.role) } }
                                td.num.gain data-gain=(r.gain) { (r.gain) }
                                td.num.lose { (r.lose) }
                                td.num { (r.undecided) }
                                td {
                                    @for u in &r.gain_sample { a.chip.gain href={ (base) "/members/" (u) } { "+" (u) } " " }
                                    @for u in &r.lose_sample { a.chip.lose href={ (base) "/members/" (u) } { "−" (u) } " " }
                                }
                            }
                        }
                    }
                }
                p.muted.small { "Undecided: a chain could not be read now; those members keep what they hold until it can. Losses take effect after the grace period." }
            }
        }
    }
}

/// The Save form: the previewed values, hidden, posted to `action`.
fn save_form(m: &Managed, f: &RuleForm, action: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) #save-form {
            (csrf_field(&m.admin))
            input type="hidden" name="role_id" value=(f.role_id);
            input type="hidden" name="rule_type" value=(f.rule_type);
            input type="hidden" name="chain" value=(f.chain);
            input type="hidden" name="contract_address" value=(f.contract_address);
            input type="hidden" name="parameters" value=(f.parameters);
            input type="hidden" name="priority" value=(f.priority);
            button.primary type="submit" #save { "Save rule" }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

fn done_text(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "created" => Some("Rule saved. Members are being re-checked; roles follow shortly."),
        "updated" => Some("Rule updated. Members are being re-checked."),
        "enabled" => Some("Rule enabled."),
        "disabled" => Some("Rule disabled: members keep what they hold."),
        "deleted" => Some("Rule deleted: its role is no longer managed."),
        _ => None,
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    m: Managed,
    Query(done): Query<Done>,
) -> Result<Markup, WebError> {
    let rules = rules::list(state.store(), m.community)
        .await
        .map_err(rule_error)?;
    let base = m.base();
    Ok(layout::community_page(
        &m,
        Tab::Rules,
        "Rules",
        html! {
            h1 { "Rules" }
            (layout::notice(done_text(done.done.as_deref())))
            p { a.button.primary href={ (base) "/rules/new" } #new-rule { "New rule" } }
            @if rules.is_empty() {
                p.empty { "No rules yet. A rule grants a Discord role to the members who meet it." }
            } @else {
                table.data #rules {
                    thead { tr { th { "Role" } th { "Type" } th { "Requirement" } th { "Priority" } th { "State" } th { "Actions" } } }
                    tbody {
                        @for r in &rules {
                            tr data-rule=(r.id) {
                                td { code { (r.role_discord_id) } }
                                td { (r.rule_type.as_str()) }
                                td {
                                    @if let Some(chain) = &r.chain { span.muted { (chain) " " } }
                                    @if let Some(c) = &r.contract_address { code.small { (c.as_str()) } " " }
                                    code.small { (r.parameters.to_string()) }
                                }
                                td.num { (r.priority) }
                                td { @if r.enabled { span.pill.ok { "enabled" } } @else { span.pill { "disabled" } } }
                                td.actions {
                                    a.button href={ (base) "/rules/" (r.id) } { "Edit" }
                                    @if r.enabled {
                                        (button_form(&m.admin, &format!("{base}/rules/{}/disable", r.id), "Disable", ""))
                                    } @else {
                                        (button_form(&m.admin, &format!("{base}/rules/{}/enable", r.id), "Enable", ""))
                                    }
                                    form.inline method="post" action={ (base) "/rules/" (r.id) "/delete" } data-confirm="Delete this rule? Members keep the role, but it is no longer managed." {
                                        (csrf_field(&m.admin))
                                        button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn form_page(
    m: &Managed,
    title: &str,
    f: &RuleForm,
    action: &str,
    problems: &[FieldProblem],
) -> Markup {
    layout::community_page(
        m,
        Tab::Rules,
        title,
        html! {
            h1 { (title) }
            (form(m, f, action, problems))
        },
    )
}

fn unprocessable(markup: Markup) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, markup).into_response()
}

pub(crate) async fn new_form(m: Managed) -> Markup {
    let f = RuleForm {
        rule_type: "score_threshold".to_owned(),
        parameters: r#"{"min_score": 100}"#.to_owned(),
        ..RuleForm::default()
    };
    let action = format!("{}/rules/preview", m.base());
    form_page(&m, "New rule", &f, &action, &[])
}

async fn find(state: &AppState, m: &Managed) -> Result<EligibilityRule, WebError> {
    let id = rule_id(m)?;
    rules::list(state.store(), m.community)
        .await
        .map_err(rule_error)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(WebError::NotFound)
}

fn rule_id(m: &Managed) -> Result<RuleId, WebError> {
    m.param("rule")?
        .parse::<uuid::Uuid>()
        .map(RuleId::from)
        .map_err(|_| WebError::NotFound)
}

pub(crate) async fn edit_form(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Markup, WebError> {
    let rule = find(&state, &m).await?;
    let action = format!("{}/rules/{}/preview", m.base(), rule.id);
    Ok(form_page(
        &m,
        "Edit rule",
        &RuleForm::of(&rule),
        &action,
        &[],
    ))
}

async fn preview_page(
    state: &AppState,
    m: &Managed,
    f: &RuleForm,
    editing: Option<RuleId>,
) -> Result<Response, WebError> {
    let base = m.base();
    let (title, preview_action, save_action) = match editing {
        None => (
            "New rule",
            format!("{base}/rules/preview"),
            format!("{base}/rules"),
        ),
        Some(id) => (
            "Edit rule",
            format!("{base}/rules/{id}/preview"),
            format!("{base}/rules/{id}"),
        ),
    };
    let rule = match f.validate() {
        Ok(rule) => rule,
        Err(problems) => {
            return Ok(unprocessable(form_page(
                m,
                title,
                f,
                &preview_action,
                &problems,
            )))
        }
    };
    let change = match editing {
        None => RuleChange::Create(rule),
        Some(id) => RuleChange::Update { id, rule },
    };
    let settings = &state.0.settings;
    let preview = domain::preview::preview(
        state.store(),
        &state.0.evaluator,
        m.community,
        &change,
        settings.recheck_period,
        settings.preview_sample,
    )
    .await;
    let preview = match preview {
        Ok(p) => p,
        Err(e) => return Ok(refusal(m, title, f, &preview_action, e)),
    };
    Ok(layout::community_page(
        m,
        Tab::Rules,
        title,
        html! {
            h1 { (title) }
            (preview_table(m, &preview))
            p { (save_form(m, f, &save_action)) " or change the rule below and preview again." }
            (form(m, f, &preview_action, &[]))
        },
    )
    .into_response())
}

/// A refusal from the domain (a role another rule grants, a bad reference)
/// shown on the form, which keeps what was typed.
fn refusal(
    m: &Managed,
    title: &str,
    f: &RuleForm,
    action: &str,
    e: domain::rules::RuleError,
) -> Response {
    let e = rule_error(e);
    let status = e.status();
    if status.is_server_error() || status == StatusCode::NOT_FOUND {
        return WebError::from(e).into_response();
    }
    let (message, fields) = e.explain();
    let mut problems = fields.to_vec();
    if problems.is_empty() {
        problems.push(FieldProblem::new(
            "rule",
            message,
            "a rule this community can hold",
        ));
    }
    (status, form_page(m, title, f, action, &problems)).into_response()
}

pub(crate) async fn preview_new(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<RuleForm>,
) -> Result<Response, WebError> {
    preview_page(&state, &m, &f, None).await
}

pub(crate) async fn preview_update(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<RuleForm>,
) -> Result<Response, WebError> {
    let id = find(&state, &m).await?.id;
    preview_page(&state, &m, &f, Some(id)).await
}

fn back_to_rules(m: &Managed, done: &str) -> Response {
    Redirect::to(&format!("{}/rules?done={done}", m.base())).into_response()
}

pub(crate) async fn create(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<RuleForm>,
) -> Result<Response, WebError> {
    let action = format!("{}/rules/preview", m.base());
    let rule = match f.validate() {
        Ok(rule) => rule,
        Err(problems) => {
            return Ok(unprocessable(form_page(
                &m, "New rule", &f, &action, &problems,
            )))
        }
    };
    match rules::create(
        state.store(),
        &state.0.rechecks,
        m.community,
        &m.actor(),
        &rule,
    )
    .await
    {
        Ok(_) => Ok(back_to_rules(&m, "created")),
        Err(e) => Ok(refusal(&m, "New rule", &f, &action, e)),
    }
}

pub(crate) async fn update(
    State(state): State<AppState>,
    m: Managed,
    Form(f): Form<RuleForm>,
) -> Result<Response, WebError> {
    let id = rule_id(&m)?;
    let action = format!("{}/rules/{id}/preview", m.base());
    let rule = match f.validate() {
        Ok(rule) => rule,
        Err(problems) => {
            return Ok(unprocessable(form_page(
                &m,
                "Edit rule",
                &f,
                &action,
                &problems,
            )))
        }
    };
    match rules::update(
        state.store(),
        &state.0.rechecks,
        m.community,
        &m.actor(),
        id,
        &rule,
    )
    .await
    {
        Ok(_) => Ok(back_to_rules(&m, "updated")),
        Err(e) => Ok(refusal(&m, "Edit rule", &f, &action, e)),
    }
}

async fn set_enabled(state: &AppState, m: &Managed, enabled: bool) -> Result<Response, WebError> {
    rules::set_enabled(
        state.store(),
        &state.0.rechecks,
        m.community,
        &m.actor(),
        rule_id(m)?,
        enabled,
    )
    .await
    .map_err(rule_error)?;
    Ok(back_to_rules(
        m,
        if enabled { "enabled" } else { "disabled" },
    ))
}

pub(crate) async fn enable(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    set_enabled(&state, &m, true).await
}

pub(crate) async fn disable(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    set_enabled(&state, &m, false).await
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    m: Managed,
) -> Result<Response, WebError> {
    rules::delete(
        state.store(),
        &state.0.rechecks,
        m.community,
        &m.actor(),
        rule_id(&m)?,
    )
    .await
    .map_err(rule_error)?;
    Ok(back_to_rules(&m, "deleted"))
}
