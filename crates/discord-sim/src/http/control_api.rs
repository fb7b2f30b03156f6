//! The control API over HTTP, under `/_sim`, for tools outside the process
//! (the demo, scripts, a gateway under test in another process).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wire::{GuildId, Id, Marker, UserId};

use crate::control::{GuildsSpec, SimControl};
use crate::faults::{CallbackFault, Fault};
use crate::oauth::OAuthUser;
use crate::scenario::Scenario;
use crate::state::Shared;
use crate::traffic::TrafficSpec;
use crate::world::{MemberPatch, NewInteraction, NewMember};
use crate::SimError;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/stats", get(stats))
        .route("/_sim/guilds", get(list_guilds).post(create_guilds))
        .route(
            "/_sim/guilds/{guild_id}",
            get(get_guild).delete(delete_guild),
        )
        .route("/_sim/guilds/{guild_id}/restore", post(restore_guild))
        .route(
            "/_sim/guilds/{guild_id}/members",
            get(list_members).post(add_member),
        )
        .route(
            "/_sim/guilds/{guild_id}/members/{user_id}",
            get(get_member).patch(update_member).delete(remove_member),
        )
        .route(
            "/_sim/guilds/{guild_id}/members/{user_id}/permissions",
            put(set_member_permissions),
        )
        .route(
            "/_sim/oauth2/users",
            get(list_oauth_users).post(add_oauth_user),
        )
        .route("/_sim/oauth2/next-login", post(next_login))
        .route("/_sim/oauth2/expire", post(expire_oauth))
        .route(
            "/_sim/interactions",
            get(list_interactions).post(create_interaction),
        )
        .route("/_sim/interactions/faults", post(fault_callbacks))
        .route("/_sim/interactions/held", get(held_callbacks))
        .route("/_sim/interactions/release", post(release_callbacks))
        .route("/_sim/interactions/{id}", get(get_interaction))
        .route("/_sim/shards", get(list_shards))
        .route("/_sim/shards/{shard_id}", get(get_transcript))
        .route("/_sim/shards/{shard_id}/faults", post(inject_fault))
        .route("/_sim/traffic", post(start_traffic))
        .route("/_sim/traffic/{id}", get(traffic_progress))
        .route("/_sim/scenario", post(run_scenario))
}

fn control(shared: Arc<Shared>) -> SimControl {
    SimControl { shared }
}

fn error(error: SimError) -> Response {
    let status = match error {
        SimError::UnknownGuild(_)
        | SimError::UnknownMember { .. }
        | SimError::UnknownRole { .. }
        | SimError::UnknownUser(_) => StatusCode::NOT_FOUND,
        SimError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

fn respond<T: serde::Serialize>(result: Result<T, SimError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error(e),
    }
}

/// A path segment that is not a snowflake.
struct BadId(String);

impl IntoResponse for BadId {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("not a snowflake: {}", self.0)})),
        )
            .into_response()
    }
}

fn id<M: Marker>(raw: &str) -> Result<Id<M>, BadId> {
    raw.parse().map_err(|_| BadId(raw.to_owned()))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(control(shared).stats()).into_response()
}

async fn list_guilds(State(shared): State<Arc<Shared>>) -> Response {
    Json(control(shared).guilds()).into_response()
}

async fn create_guilds(
    State(shared): State<Arc<Shared>>,
    Json(spec): Json<GuildsSpec>,
) -> Response {
    let ids: Vec<String> = control(shared)
        .create_guilds(&spec)
        .iter()
        .map(GuildId::to_string)
        .collect();
    (StatusCode::CREATED, Json(json!({"guild_ids": ids}))).into_response()
}

async fn get_guild(State(shared): State<Arc<Shared>>, Path(guild): Path<String>) -> Response {
    match id(&guild) {
        Ok(guild) => respond(control(shared).guild(guild)),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct DeleteGuild {
    #[serde(default)]
    unavailable: bool,
}

async fn delete_guild(
    State(shared): State<Arc<Shared>>,
    Path(guild): Path<String>,
    Query(query): Query<DeleteGuild>,
) -> Response {
    let guild = match id(&guild) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let control = control(shared);
    let result = if query.unavailable {
        control.guild_outage(guild)
    } else {
        control.remove_guild(guild)
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

async fn restore_guild(State(shared): State<Arc<Shared>>, Path(guild): Path<String>) -> Response {
    match id(&guild) {
        Ok(guild) => match control(shared).restore_guild(guild) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(e),
        },
        Err(r) => r.into_response(),
    }
}

async fn list_members(State(shared): State<Arc<Shared>>, Path(guild): Path<String>) -> Response {
    match id(&guild) {
        Ok(guild) => respond(control(shared).members(guild)),
        Err(r) => r.into_response(),
    }
}

async fn add_member(
    State(shared): State<Arc<Shared>>,
    Path(guild): Path<String>,
    body: Option<Json<NewMember>>,
) -> Response {
    let guild = match id(&guild) {
        Ok(g) => g,
        Err(r) => return r.into_response(),
    };
    let control = control(shared);
    let member = body.map(|Json(m)| m).unwrap_or_default();
    match control.add_member(guild, member) {
        Ok(user) => (StatusCode::CREATED, Json(control.member(guild, user).ok())).into_response(),
        Err(e) => error(e),
    }
}

async fn get_member(
    State(shared): State<Arc<Shared>>,
    Path((guild, user)): Path<(String, String)>,
) -> Response {
    match (id(&guild), id(&user)) {
        (Ok(g), Ok(u)) => respond(control(shared).member(g, u)),
        (Err(r), _) | (_, Err(r)) => r.into_response(),
    }
}

async fn update_member(
    State(shared): State<Arc<Shared>>,
    Path((guild, user)): Path<(String, String)>,
    Json(patch): Json<MemberPatch>,
) -> Response {
    match (id(&guild), id(&user)) {
        (Ok(g), Ok(u)) => respond(control(shared).update_member(g, u, patch)),
        (Err(r), _) | (_, Err(r)) => r.into_response(),
    }
}

async fn remove_member(
    State(shared): State<Arc<Shared>>,
    Path((guild, user)): Path<(String, String)>,
) -> Response {
    match (id(&guild), id(&user)) {
        (Ok(g), Ok(u)) => match control(shared).remove_member(g, u) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(e),
        },
        (Err(r), _) | (_, Err(r)) => r.into_response(),
    }
}

async fn list_interactions(State(shared): State<Arc<Shared>>) -> Response {
    Json(control(shared).interactions()).into_response()
}

async fn create_interaction(
    State(shared): State<Arc<Shared>>,
    Json(spec): Json<NewInteraction>,
) -> Response {
    match control(shared).create_interaction(spec) {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(e) => error(e),
    }
}

async fn get_interaction(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let interaction = match id(&raw) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match control(shared).interaction(interaction) {
        Some(info) => Json(info).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown interaction"})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct FaultCount {
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

async fn fault_callbacks(
    State(shared): State<Arc<Shared>>,
    Query(FaultCount { count }): Query<FaultCount>,
    Json(fault): Json<CallbackFault>,
) -> Response {
    control(shared).fault_callbacks(fault, count);
    Json(json!({"queued": count})).into_response()
}

async fn held_callbacks(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"held": control(shared).held_callbacks()})).into_response()
}

async fn release_callbacks(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"released": control(shared).release_callbacks()})).into_response()
}

async fn list_shards(State(shared): State<Arc<Shared>>) -> Response {
    Json(control(shared).shards()).into_response()
}

async fn get_transcript(State(shared): State<Arc<Shared>>, Path(shard): Path<u32>) -> Response {
    Json(control(shared).transcript(shard)).into_response()
}

async fn inject_fault(
    State(shared): State<Arc<Shared>>,
    Path(shard): Path<u32>,
    Json(fault): Json<Fault>,
) -> Response {
    let reached = control(shared).fault(shard, fault);
    Json(json!({"connections": reached})).into_response()
}

async fn start_traffic(
    State(shared): State<Arc<Shared>>,
    Json(spec): Json<TrafficSpec>,
) -> Response {
    let run = control(shared).start_traffic(spec);
    (StatusCode::ACCEPTED, Json(json!({"id": run.id}))).into_response()
}

async fn traffic_progress(State(shared): State<Arc<Shared>>, Path(run): Path<u64>) -> Response {
    match control(shared).traffic_progress(run) {
        Some((emitted, requested, done)) => {
            Json(json!({"emitted": emitted, "requested": requested, "done": done})).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown traffic run"})),
        )
            .into_response(),
    }
}

/// Runs a scenario's guilds and steps (its `sim` section is ignored: the
/// simulator is already running) and answers with the report.
async fn run_scenario(
    State(shared): State<Arc<Shared>>,
    Json(scenario): Json<Scenario>,
) -> Response {
    respond(control(shared).run_scenario(&scenario).await)
}

/// Permission bits as Discord writes them (a decimal string) or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Bits {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionsBody {
    permissions: Bits,
}

async fn set_member_permissions(
    State(shared): State<Arc<Shared>>,
    Path((guild, user)): Path<(String, String)>,
    Json(body): Json<PermissionsBody>,
) -> Response {
    let (guild, user) = match (id(&guild), id(&user)) {
        (Ok(g), Ok(u)) => (g, u),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let bits = match body.permissions {
        Bits::Number(bits) => bits,
        Bits::Text(text) => match text.parse() {
            Ok(bits) => bits,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("not a permission integer: {text}")})),
                )
                    .into_response()
            }
        },
    };
    match control(shared).set_member_permissions(guild, user, bits) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

async fn list_oauth_users(State(shared): State<Arc<Shared>>) -> Response {
    Json(control(shared).oauth_users()).into_response()
}

async fn add_oauth_user(
    State(shared): State<Arc<Shared>>,
    Json(user): Json<OAuthUser>,
) -> Response {
    (
        StatusCode::CREATED,
        Json(control(shared).add_oauth_user(user)),
    )
        .into_response()
}

/// `{"user_id": "…"}` to log in as someone, `{"deny": true}` to refuse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextLogin {
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    deny: bool,
}

async fn next_login(State(shared): State<Arc<Shared>>, Json(body): Json<NextLogin>) -> Response {
    let control = control(shared);
    match (body.user_id, body.deny) {
        (None, true) => control.deny_next_login(),
        (Some(user), false) => {
            if let Err(e) = control.next_login(user) {
                return error(e);
            }
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "give either user_id or deny: true"})),
            )
                .into_response()
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Expire {
    codes: bool,
    tokens: bool,
}

impl Default for Expire {
    fn default() -> Self {
        Self {
            codes: true,
            tokens: true,
        }
    }
}

/// Ages codes and/or access tokens past their lifetime (both by default).
async fn expire_oauth(State(shared): State<Arc<Shared>>, body: Option<Json<Expire>>) -> Response {
    let Expire { codes, tokens } = body.map(|Json(b)| b).unwrap_or_default();
    let control = control(shared);
    let codes = if codes {
        control.expire_oauth_codes()
    } else {
        0
    };
    let tokens = if tokens {
        control.expire_oauth_tokens()
    } else {
        0
    };
    Json(json!({"codes": codes, "tokens": tokens})).into_response()
}
