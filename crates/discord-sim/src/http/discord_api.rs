//! The Discord REST endpoints the project uses, under `/api/v10`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use wire::{ApplicationId, CommandMarker, GuildId, InteractionId, RoleId, UserId};

use crate::discord_json;
use crate::faults::CallbackFault;
use crate::http::ratelimit::{ceil_millis, RateHeaders, Verdict};
use crate::lock;
use crate::state::Shared;
use crate::world::InteractionResponse;
use crate::SimError;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v10/gateway/bot", get(gateway_bot))
        .route(
            "/api/v10/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
            put(add_role).delete(remove_role),
        )
        .route(
            "/api/v10/interactions/{interaction_id}/{token}/callback",
            post(interaction_callback),
        )
        .route(
            "/api/v10/webhooks/{application_id}/{token}/messages/@original",
            patch(edit_original),
        )
        .route(
            "/api/v10/applications/{application_id}/commands",
            put(overwrite_global_commands),
        )
}

/// A Discord JSON error (`{"message", "code"}`).
pub(crate) fn discord_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

fn sim_error(error: &SimError) -> Response {
    match error {
        SimError::UnknownGuild(_) => discord_error(StatusCode::NOT_FOUND, 10004, "Unknown Guild"),
        SimError::UnknownMember { .. } => {
            discord_error(StatusCode::NOT_FOUND, 10007, "Unknown Member")
        }
        SimError::UnknownRole { .. } => discord_error(StatusCode::NOT_FOUND, 10011, "Unknown Role"),
        other => discord_error(StatusCode::BAD_REQUEST, 0, &other.to_string()),
    }
}

pub(crate) fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let expected = format!("Bot {}", shared.config.token);
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

pub(crate) fn unauthorized() -> Response {
    discord_error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
}

fn add_headers(response: &mut Response, headers: &Option<RateHeaders>) {
    let Some(headers) = headers else { return };
    for (name, value) in headers.pairs() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Runs `handler` under the route's rate limits and adds the headers, or
/// answers 429 without running it.
pub(crate) fn limited(
    shared: &Shared,
    template: &str,
    major: &str,
    global_applies: bool,
    handler: impl FnOnce() -> Response,
) -> Response {
    let verdict = lock(&shared.rest).check(template, major, global_applies, Instant::now());
    match verdict {
        Verdict::Allowed(headers) => {
            let mut response = handler();
            add_headers(&mut response, &headers);
            response
        }
        Verdict::Limited {
            headers,
            retry_after,
            global,
        } => too_many_requests(&headers, retry_after, global),
    }
}

fn too_many_requests(
    headers: &Option<RateHeaders>,
    retry_after: std::time::Duration,
    global: bool,
) -> Response {
    let millis = ceil_millis(retry_after);
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": millis as f64 / 1000.0,
        "global": global,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    add_headers(&mut response, headers);
    let map = response.headers_mut();
    map.insert(
        "retry-after",
        HeaderValue::from(millis.div_ceil(1000).max(1)),
    );
    let scope = if global { "global" } else { "user" };
    map.insert("x-ratelimit-scope", HeaderValue::from_static(scope));
    if global {
        map.insert("x-ratelimit-global", HeaderValue::from_static("true"));
    }
    response
}

async fn gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    limited(&shared, "GET /gateway/bot", "", true, || {
        let used = lock(&shared.identify).total;
        let config = &shared.config;
        Json(json!({
            "url": shared.gateway_url,
            "shards": config.shard_count,
            "session_start_limit": {
                "total": config.session_start_total,
                "remaining": config.session_start_total.saturating_sub(used),
                "reset_after": 86_400_000,
                "max_concurrency": config.max_concurrency,
            },
        }))
        .into_response()
    })
}

fn set_role(
    shared: Arc<Shared>,
    headers: HeaderMap,
    ids: (String, String, String),
    add: bool,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let (Ok(guild_id), Ok(user_id), Ok(role_id)) = (
        ids.0.parse::<GuildId>(),
        ids.1.parse::<UserId>(),
        ids.2.parse::<RoleId>(),
    ) else {
        return discord_error(StatusCode::NOT_FOUND, 0, "404: Not Found");
    };
    let template = if add {
        "PUT /guilds/{}/members/{}/roles/{}"
    } else {
        "DELETE /guilds/{}/members/{}/roles/{}"
    };
    shared
        .role_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    limited(&shared, template, &ids.0, true, || {
        if lock(&shared.roles_forbidden).contains(&guild_id) {
            return discord_error(StatusCode::FORBIDDEN, 50013, "Missing Permissions");
        }
        match shared.apply(|world| world.set_member_role(guild_id, user_id, role_id, add)) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => sim_error(&error),
        }
    })
}

async fn add_role(
    State(shared): State<Arc<Shared>>,
    Path(ids): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    set_role(shared, headers, ids, true)
}

async fn remove_role(
    State(shared): State<Arc<Shared>>,
    Path(ids): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    set_role(shared, headers, ids, false)
}

async fn interaction_callback(
    State(shared): State<Arc<Shared>>,
    Path((interaction_id, token)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let fault = lock(&shared.callbacks).queued.pop_front();
    if fault == Some(CallbackFault::Hold) {
        hold(&shared).await;
    }
    if fault == Some(CallbackFault::Fail) {
        return discord_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        );
    }
    let response = take_callback(&shared, &interaction_id, &token, body);
    if fault == Some(CallbackFault::TakeThenFail) && response.status().is_success() {
        return discord_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        );
    }
    response
}

/// Counts a held callback for as long as it is held, also when the client
/// gives up on it and its handler is dropped.
struct Held<'a>(&'a Shared);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut faults = lock(&self.0.callbacks);
        faults.held = faults.held.saturating_sub(1);
    }
}

/// Waits until the held callbacks are released or the simulator stops.
async fn hold(shared: &Shared) {
    // Subscribed before the callback counts as held: a release that follows
    // the count cannot be missed.
    let mut release = shared.callback_release.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    lock(&shared.callbacks).held += 1;
    let _held = Held(shared);
    tokio::select! {
        _ = release.changed() => {}
        _ = shutdown.wait_for(|stopped| *stopped) => {}
    }
}

fn take_callback(shared: &Shared, interaction_id: &str, token: &str, body: Value) -> Response {
    limited(
        shared,
        "POST /interactions/{}/{}/callback",
        interaction_id,
        false,
        || {
            let Ok(id) = interaction_id.parse::<InteractionId>() else {
                return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            let Some(callback_type) = body.get("type").and_then(Value::as_u64) else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            let mut world = lock(&shared.world);
            let Some(record) = world.interactions.get_mut(&id).filter(|r| r.token == token) else {
                return discord_error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            if record.responses.iter().any(|r| r.action == "callback") {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    40060,
                    "Interaction has already been acknowledged.",
                );
            }
            record.responses.push(InteractionResponse {
                action: "callback".into(),
                callback_type: Some(callback_type),
                body,
                at_ms: Shared::now_ms(),
            });
            StatusCode::NO_CONTENT.into_response()
        },
    )
}

async fn edit_original(
    State(shared): State<Arc<Shared>>,
    Path((application_id, token)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    limited(
        &shared,
        "PATCH /webhooks/{}/{}/messages/@original",
        &token,
        false,
        || {
            if application_id.parse::<ApplicationId>().ok() != Some(shared.config.application_id) {
                return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            }
            let mut world = lock(&shared.world);
            let Some(id) = world.interaction_by_token.get(&token).copied() else {
                return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            };
            let Some(record) = world.interactions.get_mut(&id) else {
                return discord_error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            };
            // Only a message (4) or deferred message (5) callback creates an
            // original response to edit.
            let has_original = record
                .responses
                .iter()
                .any(|r| matches!(r.callback_type, Some(4 | 5)));
            if !has_original {
                return discord_error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            let now = Shared::now_ms();
            record.responses.push(InteractionResponse {
                action: "edit_original".into(),
                callback_type: None,
                body: body.clone(),
                at_ms: now,
            });
            let message_id = record.message_id;
            let guild_id = record.guild_id;
            let Some(channel_id) = world.guilds.get(&guild_id).map(|g| g.channel_id) else {
                return discord_error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            };
            let config = &shared.config;
            let message = discord_json::message(
                message_id,
                channel_id,
                config.application_id,
                &config.bot_username,
                &body,
                now,
            );
            Json(message).into_response()
        },
    )
}

/// `PUT /applications/{id}/commands`: replaces the application's global
/// commands. As on Discord, a command keeps its id when a command of the
/// same name was registered before, and names and descriptions are checked.
async fn overwrite_global_commands(
    State(shared): State<Arc<Shared>>,
    Path(application_id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let body = body.map_or(Value::Null, |Json(v)| v);
    limited(
        &shared,
        "PUT /applications/{}/commands",
        &application_id,
        true,
        || {
            if application_id.parse::<ApplicationId>().ok() != Some(shared.config.application_id) {
                return discord_error(StatusCode::FORBIDDEN, 50001, "Missing Access");
            }
            let Some(commands) = body.as_array() else {
                return discord_error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
            };
            if let Some(problem) = commands.iter().find_map(command_problem) {
                return discord_error(
                    StatusCode::BAD_REQUEST,
                    50035,
                    &format!("Invalid Form Body: {problem}"),
                );
            }
            let mut world = lock(&shared.world);
            let stored: Vec<Value> = commands
                .iter()
                .map(|command| {
                    let name = command["name"].as_str().unwrap_or_default();
                    let id = world
                        .application_commands
                        .iter()
                        .find(|c| c["name"] == name)
                        .and_then(|c| c["id"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| world.ids.next::<CommandMarker>().to_string());
                    let mut stored = command.clone();
                    stored["id"] = json!(id);
                    stored["application_id"] = json!(shared.config.application_id.to_string());
                    stored["version"] = json!(world.ids.next::<CommandMarker>().to_string());
                    if stored.get("type").is_none_or(Value::is_null) {
                        stored["type"] = json!(1);
                    }
                    if stored.get("default_member_permissions").is_none() {
                        stored["default_member_permissions"] = Value::Null;
                    }
                    stored
                })
                .collect();
            world.application_commands = stored.clone();
            Json(stored).into_response()
        },
    )
}

/// What Discord would refuse in a chat-input command: names of 1–32
/// lowercase letters, digits, `-` or `_`; descriptions of 1–100 characters.
fn command_problem(command: &Value) -> Option<String> {
    let name = command["name"].as_str().unwrap_or_default();
    let name_ok = (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Some(format!("command name {name:?} is invalid"));
    }
    let description = command["description"].as_str().unwrap_or_default();
    if !(1..=100).contains(&description.chars().count()) {
        return Some(format!(
            "description of /{name} must be 1 to 100 characters"
        ));
    }
    None
}
