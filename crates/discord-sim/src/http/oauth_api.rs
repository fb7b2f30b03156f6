//! Discord's OAuth2 endpoints for dashboard logins: the authorize page, the
//! token endpoint, and the two user routes an access token opens.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use url::{form_urlencoded, Url};
use wire::{GuildId, UserId};

use crate::discord_json;
use crate::http::discord_api::{authorized, discord_error, limited, unauthorized};
use crate::lock;
use crate::oauth::{self, Grant, Login, OAuthUser, TokenError};
use crate::state::Shared;
use crate::world::member_permissions;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/oauth2/authorize", get(authorize))
        .route("/api/oauth2/authorize", get(authorize))
        .route("/api/oauth2/token", post(token))
        .route("/api/v10/oauth2/token", post(token))
        .route("/api/users/@me", get(current_user))
        .route("/api/v10/users/@me", get(current_user))
        .route("/api/users/@me/guilds", get(current_user_guilds))
        .route("/api/v10/users/@me/guilds", get(current_user_guilds))
}

fn parse_form(raw: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(raw).into_owned().collect()
}

/// A parameter, with an empty value counting as absent.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n<h1>{}</h1>\n{body}</body></html>\n",
        escape_html(title),
        escape_html(title),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// Discord shows an error page instead of redirecting when it cannot trust
/// the redirect target: the client or the redirect URI is wrong.
fn error_page(title: &str, detail: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        title,
        &format!("<p id=\"error\">{}</p>\n", escape_html(detail)),
    )
}

fn found(location: &Url) -> Response {
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_page("Invalid OAuth2 redirect_uri", "not a valid header value"),
    }
}

/// `GET /oauth2/authorize`. Who logs in is chosen by the simulator-only
/// parameters `login_as=<user id>` or `deny=true`, else by the next login
/// queued through the control API, else on a page listing the OAuth2 users.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let raw = raw.unwrap_or_default();
    let params = parse_form(raw.as_bytes());
    let config = &shared.config;
    if param(&params, "client_id") != Some(config.application_id.to_string().as_str()) {
        return error_page(
            "Invalid OAuth2 application",
            "client_id is missing or is not this application's id",
        );
    }
    let Some(redirect_uri) =
        param(&params, "redirect_uri").filter(|u| oauth::redirect_allowed(&config.oauth2, u))
    else {
        return error_page(
            "Invalid OAuth2 redirect_uri",
            "redirect_uri is missing or is not registered for this application",
        );
    };
    let Ok(target) = Url::parse(redirect_uri) else {
        return error_page("Invalid OAuth2 redirect_uri", "redirect_uri is not a URL");
    };
    let state = param(&params, "state");
    let redirect = |pairs: &[(&str, &str)]| {
        let mut location = target.clone();
        {
            let mut query = location.query_pairs_mut();
            for (name, value) in pairs {
                query.append_pair(name, value);
            }
            if let Some(state) = state {
                query.append_pair("state", state);
            }
        }
        found(&location)
    };
    let refuse = |error: &str, description: &str| {
        redirect(&[("error", error), ("error_description", description)])
    };

    if param(&params, "response_type") != Some("code") {
        return refuse(
            "unsupported_response_type",
            "response_type must be \"code\"",
        );
    }
    let scopes = match oauth::parse_scopes(param(&params, "scope")) {
        Ok(scopes) => scopes,
        Err(description) => return refuse("invalid_scope", &description),
    };
    let challenge = match (
        param(&params, "code_challenge"),
        param(&params, "code_challenge_method"),
    ) {
        (None, None) => None,
        (Some(challenge), Some("S256")) if oauth::pkce_string(challenge) => {
            Some(challenge.to_owned())
        }
        _ => {
            return refuse(
                "invalid_request",
                "code_challenge must be 43 to 128 characters with code_challenge_method=S256",
            )
        }
    };

    let login = if matches!(param(&params, "deny"), Some("true" | "1")) {
        Login::Deny
    } else if let Some(raw_id) = param(&params, "login_as") {
        match raw_id.parse::<UserId>() {
            Ok(user_id) => Login::As(user_id),
            Err(_) => return error_page("Unknown simulated user", "login_as is not a user id"),
        }
    } else {
        // Taken only now, so that a malformed request does not use it up.
        let queued = lock(&shared.oauth).logins.pop_front();
        match queued {
            Some(login) => login,
            None => return chooser_page(&shared, &raw),
        }
    };
    let user_id = match login {
        Login::Deny => {
            return refuse(
                "access_denied",
                "The resource owner or authorization server denied the request",
            )
        }
        Login::As(user_id) => user_id,
    };
    if known_user(&shared, user_id).is_none() {
        return error_page(
            "Unknown simulated user",
            &format!("{user_id} is neither an OAuth2 user nor a member of any guild"),
        );
    }
    let code = lock(&shared.oauth).issue_code(
        Grant { user_id, scopes },
        redirect_uri,
        challenge,
        Duration::from_millis(config.oauth2.code_ttl_ms),
    );
    redirect(&[("code", &code)])
}

/// A registered OAuth2 user, or a guild member, who then becomes one so
/// that leaving every guild does not make their token's user vanish.
pub(crate) fn known_user(shared: &Shared, user_id: UserId) -> Option<OAuthUser> {
    if let Some(user) = lock(&shared.oauth).users.get(&user_id) {
        return Some(user.clone());
    }
    let user = {
        let world = lock(&shared.world);
        let member = world.any_member(user_id)?;
        OAuthUser {
            user_id,
            username: member.username.clone(),
            global_name: member.global_name.clone(),
        }
    };
    Some(
        lock(&shared.oauth)
            .users
            .entry(user_id)
            .or_insert(user)
            .clone(),
    )
}

/// The stand-in for Discord's login and consent screens: one link per
/// OAuth2 user (`id="login-<user id>"`) and a cancel link (`id="deny"`),
/// each repeating the request with `login_as` or `deny` added.
fn chooser_page(shared: &Shared, raw_query: &str) -> Response {
    let users: Vec<OAuthUser> = lock(&shared.oauth).users.values().cloned().collect();
    let mut body = String::from("<p>Log in to the simulated Discord as:</p>\n<ul>\n");
    for user in &users {
        let href = format!("?{raw_query}&login_as={}", user.user_id);
        let _ = writeln!(
            body,
            "<li><a id=\"login-{}\" href=\"{}\">{} ({})</a></li>",
            user.user_id,
            escape_html(&href),
            escape_html(&user.username),
            user.user_id,
        );
    }
    body.push_str("</ul>\n");
    if users.is_empty() {
        body.push_str("<p id=\"no-users\">No OAuth2 users yet: add one through the control API (<code>POST /_sim/oauth2/users</code>).</p>\n");
    }
    let _ = writeln!(
        body,
        "<p><a id=\"deny\" href=\"{}\">Cancel</a></p>",
        escape_html(&format!("?{raw_query}&deny=true")),
    );
    html(StatusCode::OK, "Authorize access", &body)
}

fn token_error(error: &TokenError) -> Response {
    let status = match error {
        TokenError::InvalidClient => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({"error": error.code(), "error_description": error.to_string()});
    (status, Json(body)).into_response()
}

/// `client_id:client_secret` from HTTP Basic; `None` when there is no
/// Basic header, `Some(None)` when it is malformed.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.and_then(|text| {
        text.split_once(':')
            .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
    }))
}

/// `POST /api/oauth2/token`, form-encoded, the client authenticated by HTTP
/// Basic or by `client_id` and `client_secret` fields.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return token_error(&TokenError::InvalidRequest(
            "The body must be application/x-www-form-urlencoded",
        ));
    }
    let form = parse_form(&body);
    let config = &shared.config;
    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some(Some((id, secret))) => (Some(id), Some(secret)),
        Some(None) => (None, None),
        None => (
            param(&form, "client_id").map(str::to_owned),
            param(&form, "client_secret").map(str::to_owned),
        ),
    };
    let client_ok = client_id.as_deref() == Some(config.application_id.to_string().as_str())
        && client_secret.as_deref() == Some(config.oauth2.client_secret.as_str());
    if !client_ok {
        return token_error(&TokenError::InvalidClient);
    }
    let result = {
        let mut oauth = lock(&shared.oauth);
        match param(&form, "grant_type") {
            Some("authorization_code") => oauth.redeem_code(
                param(&form, "code"),
                param(&form, "redirect_uri"),
                param(&form, "code_verifier"),
                &config.oauth2,
            ),
            Some("refresh_token") => oauth.refresh(param(&form, "refresh_token"), &config.oauth2),
            _ => Err(TokenError::UnsupportedGrantType),
        }
    };
    match result {
        Ok(tokens) => {
            let mut response = Json(tokens).into_response();
            // RFC 6749 §5.1: token responses must not be cached.
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => token_error(&error),
    }
}

/// Who is calling a user route.
enum Caller {
    Bot,
    Person { token: String, grant: Grant },
}

fn caller(shared: &Shared, headers: &HeaderMap) -> Option<Caller> {
    if authorized(shared, headers) {
        return Some(Caller::Bot);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    let grant = lock(&shared.oauth).access(token)?.clone();
    Some(Caller::Person {
        token: token.to_owned(),
        grant,
    })
}

/// `GET /users/@me`: the person behind a Bearer token with `identify`, or
/// the bot user for the bot token.
async fn current_user(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match caller(&shared, &headers) {
        Some(Caller::Bot) => limited(&shared, "GET /users/@me", "", true, || {
            let config = &shared.config;
            Json(discord_json::user(
                config.bot_user_id,
                &config.bot_username,
                None,
                true,
            ))
            .into_response()
        }),
        Some(Caller::Person { token, grant }) if grant.has_scope("identify") => {
            // A Bearer token's limits are its own, apart from the bot's
            // global budget: on Discord every token has its own.
            limited(&shared, "GET /users/@me", &token, false, || {
                let Some(user) = known_user(&shared, grant.user_id) else {
                    return unauthorized();
                };
                Json(person_json(&user, &grant)).into_response()
            })
        }
        _ => unauthorized(),
    }
}

fn person_json(user: &OAuthUser, grant: &Grant) -> Value {
    let mut value = json!({
        "id": user.user_id.to_string(),
        "username": user.username,
        "global_name": user.global_name,
        "discriminator": "0",
        "avatar": null,
        "avatar_decoration_data": null,
        "banner": null,
        "accent_color": null,
        "public_flags": 0,
        "flags": 0,
        "locale": "en-US",
        "mfa_enabled": false,
        "premium_type": 0,
    });
    if grant.has_scope("email") {
        value["email"] = json!(format!("{}@users.sim.invalid", user.username));
        value["verified"] = json!(true);
    }
    value
}

/// `GET /users/@me/guilds` (`before`, `after`, `limit` 1–200, `with_counts`):
/// the guilds the person is a member of, whether or not the bot is there,
/// with their permissions there as a decimal string.
async fn current_user_guilds(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(Caller::Person { token, grant }) = caller(&shared, &headers) else {
        return unauthorized();
    };
    if !grant.has_scope("guilds") {
        return unauthorized();
    }
    let params = parse_form(raw.unwrap_or_default().as_bytes());
    let invalid = || discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
    let id = |name: &str| param(&params, name).map(str::parse::<GuildId>).transpose();
    let (Ok(before), Ok(after)) = (id("before"), id("after")) else {
        return invalid();
    };
    let limit = match param(&params, "limit").map(str::parse::<usize>) {
        None => 200,
        Some(Ok(limit)) if (1..=200).contains(&limit) => limit,
        Some(_) => return invalid(),
    };
    let with_counts = param(&params, "with_counts") == Some("true");
    limited(&shared, "GET /users/@me/guilds", &token, false, || {
        let world = lock(&shared.world);
        let mut guilds: Vec<Value> = world
            .guilds_of_user(grant.user_id)
            .into_iter()
            .filter(|(g, _)| after.is_none_or(|a| g.id > a) && before.is_none_or(|b| g.id < b))
            .map(|(guild, member)| {
                let mut value = json!({
                    "id": guild.id.to_string(),
                    "name": guild.name,
                    "icon": null,
                    "banner": null,
                    "owner": guild.owner_id == grant.user_id,
                    "permissions": member_permissions(guild, member).to_string(),
                    "features": [],
                });
                if with_counts {
                    value["approximate_member_count"] = json!(guild.members.len());
                    value["approximate_presence_count"] = json!(0);
                }
                value
            })
            .collect();
        // With `before`, Discord pages backwards: the guilds just below it.
        if before.is_some() && after.is_none() {
            let skip = guilds.len().saturating_sub(limit);
            guilds.drain(..skip);
        } else {
            guilds.truncate(limit);
        }
        Json(guilds).into_response()
    })
}
