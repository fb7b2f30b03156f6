//! The simulated REST API against twilight-http 0.18 through its proxy setting.

mod common;

use std::time::{Duration, Instant};

use common::*;
use discord_sim::{GuildsSpec, NewInteraction, RestLimits, SimConfig, Simulator};
use twilight_gateway::Event;
use twilight_http::api_error::ApiError;
use twilight_http::error::ErrorType;
use twilight_http::Client;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;
use wire::{GuildId, RoleId, UserId};

fn client(sim: &Simulator, rate_limiter: bool) -> Client {
    let builder = Client::builder()
        .token(TOKEN.to_owned())
        .proxy(sim.api_host(), true);
    let builder = if rate_limiter {
        builder
    } else {
        builder.ratelimiter(None)
    };
    builder.build()
}

/// A guild with one member and one assignable role.
fn guild_with_member(sim: &Simulator) -> (GuildId, UserId, RoleId) {
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 1,
        roles_per_guild: 1,
    })[0];
    let info = control.guild(guild).expect("guild exists");
    let user = control.members(guild).expect("members")[0].user_id;
    (guild, user, info.role_ids[1])
}

#[tokio::test]
async fn gateway_bot_points_at_the_simulator() {
    let sim = start(SimConfig {
        shard_count: 4,
        max_concurrency: 2,
        ..fast_config()
    })
    .await;
    let info = client(&sim, true)
        .gateway()
        .authed()
        .await
        .expect("request succeeds")
        .model()
        .await
        .expect("twilight reads the body");
    assert_eq!(info.url, sim.gateway_url());
    assert_eq!(info.shards, 4);
    assert_eq!(info.session_start_limit.max_concurrency, 2);
    assert_eq!(info.session_start_limit.remaining, 1000);
    sim.shutdown().await;
}

#[tokio::test]
async fn role_add_and_remove_change_the_member_and_dispatch_an_update() {
    let sim = start(fast_config()).await;
    let (guild, user, role) = guild_with_member(&sim);
    let mut shard = probe(&sim, 0, 1);
    shard
        .expect(WAIT, |e| matches!(e, Event::GuildCreate(_)).then_some(()))
        .await;
    let http = client(&sim, true);

    let added = http
        .add_guild_member_role(
            Id::new(guild.get()),
            Id::new(user.get()),
            Id::new(role.get()),
        )
        .await
        .expect("role added");
    assert_eq!(added.status().get(), 204);
    assert_eq!(
        sim.control().member(guild, user).expect("member").roles,
        vec![role]
    );
    let roles = shard
        .expect(WAIT, |e| match e {
            Event::MemberUpdate(update) => {
                Some(update.roles.iter().map(|r| r.get()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await;
    assert_eq!(roles, vec![role]);

    http.remove_guild_member_role(
        Id::new(guild.get()),
        Id::new(user.get()),
        Id::new(role.get()),
    )
    .await
    .expect("role removed");
    assert!(sim
        .control()
        .member(guild, user)
        .expect("member")
        .roles
        .is_empty());
    let roles = shard
        .expect(WAIT, |e| match e {
            Event::MemberUpdate(update) => Some(update.roles.len()),
            _ => None,
        })
        .await;
    assert_eq!(roles, 0);
    shard.task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_role_is_discords_404() {
    let sim = start(fast_config()).await;
    let (guild, user, _) = guild_with_member(&sim);
    let error = client(&sim, false)
        .add_guild_member_role(Id::new(guild.get()), Id::new(user.get()), Id::new(42))
        .await
        .expect_err("no such role");
    match error.kind() {
        ErrorType::Response {
            status,
            error: ApiError::General(general),
            ..
        } => {
            assert_eq!(status.get(), 404);
            assert_eq!(general.code, 10011);
        }
        other => panic!("unexpected error {other:?}"),
    }
    sim.shutdown().await;
}

fn limited_config(route_limit: u32, window_ms: u64) -> SimConfig {
    SimConfig {
        rest: RestLimits {
            global_per_second: 50,
            route_limit,
            route_window_ms: window_ms,
        },
        ..fast_config()
    }
}

#[tokio::test]
async fn rate_limit_headers_count_down_and_429_carries_retry_after() {
    let sim = start(limited_config(2, 10_000)).await;
    let (guild, user, role) = guild_with_member(&sim);
    let path = format!("/api/v10/guilds/{guild}/members/{user}/roles/{role}");
    let addr = sim.api_addr();

    let first = raw_request(addr, "PUT", &path).await;
    assert_eq!(first.status, 204);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(first.header("x-ratelimit-scope"), Some("user"));
    let bucket = first
        .header("x-ratelimit-bucket")
        .expect("bucket")
        .to_owned();
    let reset_after: f64 = first
        .header("x-ratelimit-reset-after")
        .and_then(|v| v.parse().ok())
        .expect("numeric reset-after");
    assert!(reset_after > 9.0 && reset_after <= 10.0, "{reset_after}");
    let reset: f64 = first
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("numeric reset");
    assert!(reset > 1.7e9, "an epoch timestamp in seconds: {reset}");

    let other_route = raw_request(addr, "DELETE", &path).await;
    assert_eq!(other_route.header("x-ratelimit-remaining"), Some("1"));
    assert_ne!(
        other_route.header("x-ratelimit-bucket"),
        Some(bucket.as_str())
    );
    let second = raw_request(addr, "PUT", &path).await;
    assert_eq!(second.status, 204);
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));

    let limited = raw_request(addr, "PUT", &path).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(limited.header("x-ratelimit-bucket"), Some(bucket.as_str()));
    let retry_header: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("integer retry-after");
    assert_eq!(retry_header, 10);
    let body = limited.json();
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().expect("numeric retry_after");
    assert!(retry_after > 9.0 && retry_after <= 10.0, "{retry_after}");
    assert_eq!(sim.control().stats().rest_rate_limited, 1);
    let roles_now = sim.control().member(guild, user).expect("member").roles;
    assert_eq!(roles_now, vec![role], "added, removed, added again");
    sim.shutdown().await;
}

#[tokio::test]
async fn global_limit_answers_429_with_the_global_flag() {
    let sim = start(SimConfig {
        rest: RestLimits {
            global_per_second: 3,
            route_limit: 0,
            route_window_ms: 1_000,
        },
        ..fast_config()
    })
    .await;
    let (guild, user, role) = guild_with_member(&sim);
    let path = format!("/api/v10/guilds/{guild}/members/{user}/roles/{role}");
    // The window is one second: retry the burst if it straddled a boundary.
    for _attempt in 0..3 {
        let started = Instant::now();
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..4 {
            let response = raw_request(sim.api_addr(), "PUT", &path).await;
            statuses.push(response.status);
            last = Some(response);
        }
        if started.elapsed() > Duration::from_millis(500) {
            continue;
        }
        let last = last.expect("four responses");
        if statuses == [204, 204, 204, 429] {
            assert_eq!(last.header("x-ratelimit-global"), Some("true"));
            assert_eq!(last.header("x-ratelimit-scope"), Some("global"));
            assert_eq!(last.json()["global"], true);
            sim.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    panic!("never saw the fourth request in a second limited");
}

#[tokio::test]
async fn twilights_rate_limiter_waits_for_the_advertised_reset() {
    let sim = start(limited_config(2, 1_000)).await;
    let (guild, user, role) = guild_with_member(&sim);
    let http = client(&sim, true);
    let started = Instant::now();
    for _ in 0..3 {
        http.add_guild_member_role(
            Id::new(guild.get()),
            Id::new(user.get()),
            Id::new(role.get()),
        )
        .await
        .expect("twilight waits instead of hitting a 429");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the third request waited for the bucket ({:?})",
        started.elapsed()
    );
    assert_eq!(sim.control().stats().rest_rate_limited, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn without_its_rate_limiter_twilight_retries_a_429_until_it_passes() {
    let sim = start(limited_config(1, 300)).await;
    let (guild, user, role) = guild_with_member(&sim);
    let http = client(&sim, false);
    for _ in 0..2 {
        http.add_guild_member_role(
            Id::new(guild.get()),
            Id::new(user.get()),
            Id::new(role.get()),
        )
        .await
        .expect("twilight-http 0.18 retries 429s itself");
    }
    assert!(sim.control().stats().rest_rate_limited >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn interaction_callback_and_original_edit_are_recorded() {
    let sim = start(fast_config()).await;
    let (guild, user, _) = guild_with_member(&sim);
    let created = sim
        .control()
        .create_interaction(NewInteraction {
            guild_id: guild,
            user_id: user,
            command_name: "verify".into(),
            options: Vec::new(),
            locale: None,
        })
        .expect("interaction created");
    let http = client(&sim, true);
    let interaction = http.interaction(Id::new(sim.config().application_id.get()));
    let response = InteractionResponse {
        kind: InteractionResponseType::DeferredChannelMessageWithSource,
        data: Some(InteractionResponseData::default()),
    };
    interaction
        .create_response(Id::new(created.id.get()), &created.token, &response)
        .await
        .expect("callback accepted");
    let message = interaction
        .update_response(&created.token)
        .content(Some("You are verified."))
        .await
        .expect("edit accepted")
        .model()
        .await
        .expect("twilight reads the message");
    assert_eq!(message.content, "You are verified.");

    let again = interaction
        .create_response(Id::new(created.id.get()), &created.token, &response)
        .await
        .expect_err("a second callback is refused");
    assert!(matches!(
        again.kind(),
        ErrorType::Response { status, .. } if status.get() == 400
    ));

    let info = sim.control().interaction(created.id).expect("recorded");
    let actions: Vec<_> = info.responses.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["callback", "edit_original"]);
    assert_eq!(info.responses[0].callback_type, Some(5));
    assert_eq!(info.responses[1].body["content"], "You are verified.");
    sim.shutdown().await;
}
