//! The control API (in-process and over HTTP), generated traffic and scenarios.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use discord_sim::{Fault, GuildsSpec, Scenario, SimConfig, Step, TrafficMix, TrafficSpec};
use serde_json::json;
use twilight_gateway::Event;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn http_control_api_shapes_the_world_and_reads_it_back() {
    let sim = start(fast_config()).await;
    let addr = sim.api_addr();
    let created = raw_request_with(
        addr,
        "POST",
        "/_sim/guilds",
        Some(json!({"count": 3, "members_per_guild": 4, "roles_per_guild": 2})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let ids: Vec<String> =
        serde_json::from_value(created.json()["guild_ids"].clone()).expect("guild ids are strings");
    assert_eq!(ids.len(), 3);

    let guild = raw_request(addr, "GET", &format!("/_sim/guilds/{}", ids[0])).await;
    assert_eq!(guild.json()["member_count"], 4);
    assert_eq!(guild.json()["role_ids"].as_array().map(Vec::len), Some(3));

    let added = raw_request_with(
        addr,
        "POST",
        &format!("/_sim/guilds/{}/members", ids[0]),
        Some(json!({"username": "bob", "nick": "B"})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let user = added.json()["user_id"]
        .as_str()
        .expect("user id")
        .to_owned();
    let role = guild.json()["role_ids"][1]
        .as_str()
        .expect("role")
        .to_owned();

    let patched = raw_request_with(
        addr,
        "PATCH",
        &format!("/_sim/guilds/{}/members/{user}", ids[0]),
        Some(json!({"roles": [role]})),
    )
    .await;
    assert_eq!(patched.json()["roles"], json!([role]));
    assert_eq!(patched.json()["nick"], "B");

    let unknown = raw_request(addr, "GET", "/_sim/guilds/1").await;
    assert_eq!(unknown.status, 404);
    let bad = raw_request(addr, "GET", "/_sim/guilds/abc").await;
    assert_eq!(bad.status, 400);

    let stats = raw_request(addr, "GET", "/_sim/stats").await.json();
    assert_eq!(stats["guilds"], 3);
    assert_eq!(stats["members"], 13);
    sim.shutdown().await;
}

#[tokio::test]
async fn http_faults_and_transcripts_reach_the_shard() {
    let sim = start(fast_config()).await;
    sim.control().create_guilds(&GuildsSpec::default());
    let mut shard = probe(&sim, 0, 1);
    shard
        .expect(WAIT, |e| matches!(e, Event::GuildCreate(_)).then_some(()))
        .await;
    let addr = sim.api_addr();
    let fault = raw_request_with(
        addr,
        "POST",
        "/_sim/shards/0/faults",
        Some(json!({"kind": "reconnect"})),
    )
    .await;
    assert_eq!(fault.json()["connections"], 1);
    shard
        .expect(WAIT, |e| matches!(e, Event::Resumed).then_some(()))
        .await;

    let shards = raw_request(addr, "GET", "/_sim/shards").await.json();
    assert_eq!(shards[0]["identifies"], 1);
    assert_eq!(shards[0]["resumes"], 1);
    let transcript = raw_request(addr, "GET", "/_sim/shards/0").await.json();
    let events: Vec<&str> = transcript["sent"]
        .as_array()
        .expect("sent frames")
        .iter()
        .filter_map(|f| f["event"].as_str())
        .collect();
    assert_eq!(events, ["READY", "GUILD_CREATE", "RESUMED"]);
    shard.task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn http_interactions_show_what_the_application_answered() {
    let sim = start(fast_config()).await;
    let guild = sim.control().create_guilds(&GuildsSpec::default())[0];
    let user = sim.control().members(guild).expect("members")[0].user_id;
    let addr = sim.api_addr();
    let created = raw_request_with(
        addr,
        "POST",
        "/_sim/interactions",
        Some(json!({"guild_id": guild.to_string(), "user_id": user.to_string(), "command_name": "verify"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let token = created.json()["token"].as_str().expect("token").to_owned();
    let callback = raw_request_with(
        addr,
        "POST",
        &format!("/api/v10/interactions/{id}/{token}/callback"),
        Some(json!({"type": 4, "data": {"content": "hi"}})),
    )
    .await;
    assert_eq!(callback.status, 204, "{}", callback.body);
    let wrong_token = raw_request_with(
        addr,
        "POST",
        &format!("/api/v10/interactions/{id}/nope/callback"),
        Some(json!({"type": 4})),
    )
    .await;
    assert_eq!(wrong_token.status, 404);
    assert_eq!(wrong_token.json()["code"], 10062);
    let read = raw_request(addr, "GET", &format!("/_sim/interactions/{id}"))
        .await
        .json();
    assert_eq!(read["responses"][0]["body"]["data"]["content"], "hi");
    sim.shutdown().await;
}

#[tokio::test]
async fn traffic_is_reproducible_from_its_seed() {
    async fn run(seed: u64) -> (discord_sim::TrafficReport, Vec<usize>) {
        let sim = start(fast_config()).await;
        let guilds = sim.control().create_guilds(&GuildsSpec {
            count: 4,
            members_per_guild: 5,
            roles_per_guild: 2,
        });
        let report = sim
            .control()
            .start_traffic(TrafficSpec {
                events: 300,
                seed,
                ..TrafficSpec::default()
            })
            .wait()
            .await;
        let sizes = guilds
            .iter()
            .map(|g| sim.control().members(*g).expect("members").len())
            .collect();
        sim.shutdown().await;
        (report, sizes)
    }
    let (a, sizes_a) = run(11).await;
    let (b, sizes_b) = run(11).await;
    let (c, sizes_c) = run(12).await;
    assert_eq!(a.emitted, 300);
    assert_eq!(
        a.member_join + a.member_leave + a.member_update + a.interaction,
        300
    );
    assert!(a.member_update > 0 && a.member_join > 0 && a.interaction > 0);
    assert_eq!(
        (a.member_join, a.member_leave, a.member_update),
        (b.member_join, b.member_leave, b.member_update)
    );
    assert_eq!(sizes_a, sizes_b, "same seed, same world");
    assert!(
        sizes_a != sizes_c || a.member_join != c.member_join,
        "another seed differs"
    );
}

#[tokio::test]
async fn traffic_at_a_rate_takes_about_that_long_and_reaches_the_shard() {
    let sim = start(fast_config()).await;
    sim.control().create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 2,
        roles_per_guild: 1,
    });
    let mut shard = probe(&sim, 0, 1);
    for _ in 0..2 {
        shard
            .expect(WAIT, |e| matches!(e, Event::GuildCreate(_)).then_some(()))
            .await;
    }
    let started = std::time::Instant::now();
    let report = sim
        .control()
        .start_traffic(TrafficSpec {
            events: 100,
            rate_per_second: Some(400.0),
            mix: TrafficMix {
                member_join: 1,
                member_leave: 0,
                member_update: 0,
                interaction: 0,
            },
            ..TrafficSpec::default()
        })
        .wait()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(report.member_join, 100);
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5),
        "100 events at 400/s took {elapsed:?}"
    );
    let mut joins = BTreeSet::new();
    while joins.len() < 100 {
        joins.insert(
            shard
                .expect(WAIT, |e| match e {
                    Event::MemberAdd(add) => Some(add.member.user.id.get()),
                    _ => None,
                })
                .await,
        );
    }
    shard.task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn toml_scenario_runs_against_a_live_shard() {
    let scenario = Scenario::load(&fixture("storm.toml")).expect("scenario parses");
    let config: SimConfig = scenario.sim.clone().expect("scenario has sim settings");
    assert_eq!(config.shard_count, 2);
    assert!(matches!(
        scenario.steps[2],
        Step::Fault {
            shard_id: 0,
            fault: Fault::Reconnect
        }
    ));
    let sim = start(config).await;
    let control = sim.control().clone();
    // Guilds are created by the scenario; the shard connects while it waits.
    let runner = tokio::spawn(async move { control.run_scenario(&scenario).await });
    let mut shard = probe(&sim, 0, 2);
    let report = tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("scenario finishes")
        .expect("task ran")
        .expect("scenario succeeds");
    assert_eq!(report.guild_ids.len(), 4);
    assert_eq!(report.steps_run, 6);
    assert_eq!(report.traffic[0].member_join, 100);
    let on_shard_0 = report
        .guild_ids
        .iter()
        .filter(|g| discord_sim::shard_for_guild(**g, 2) == 0)
        .count();
    assert_eq!(on_shard_0, 2);
    let transcript = sim.control().transcript(0);
    assert_eq!(transcript.resumes, 1, "the reconnect fault was resumed");
    assert_eq!(transcript.identifies, 1);
    assert_eq!(
        transcript.dispatch_counts.get("INTERACTION_CREATE"),
        Some(&1)
    );
    let seen = shard.collect_for(Duration::from_millis(300)).await;
    assert!(seen
        .iter()
        .any(|s| matches!(s, Seen::Event(e) if matches!(e.as_ref(), Event::InteractionCreate(_)))));
    shard.task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn json_scenario_posts_over_http() {
    let sim = start(fast_config()).await;
    let text = std::fs::read_to_string(fixture("small.json")).expect("fixture readable");
    let body: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let report = raw_request_with(sim.api_addr(), "POST", "/_sim/scenario", Some(body)).await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.json()["steps_run"], 4);
    let guilds = sim.control().guilds();
    assert_eq!(guilds.len(), 2);
    assert!(guilds[1].available, "outage ended");
    assert_eq!(guilds[0].member_count, 2, "one member left");
    let loaded = Scenario::load(&fixture("small.json")).expect("loads from a file too");
    assert_eq!(loaded.steps.len(), 4);
    sim.shutdown().await;
}

#[test]
fn scenario_errors_name_the_file() {
    let missing = Scenario::load(&fixture("nope.toml")).expect_err("no such file");
    assert!(missing.to_string().contains("nope.toml"), "{missing}");
    let dir = std::env::temp_dir().join(format!("discord-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[steps]]\naction = \"explode\"\n").expect("written");
    let error = Scenario::load(&bad).expect_err("unknown action");
    assert!(error.to_string().contains("bad.toml"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn interaction_callbacks_can_be_held_failed_or_lost_on_the_way_back() {
    let sim = start(fast_config()).await;
    let addr = sim.api_addr();
    let guild = sim.control().create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 1,
        roles_per_guild: 0,
    })[0];
    let user = sim.control().members(guild).expect("members")[0].user_id;
    let create = || {
        sim.control()
            .create_interaction(discord_sim::NewInteraction {
                guild_id: guild,
                user_id: user,
                command_name: "profile".into(),
                options: Vec::new(),
                locale: None,
            })
            .expect("interaction created")
    };
    let path = |created: &discord_sim::CreatedInteraction| {
        format!(
            "/api/v10/interactions/{}/{}/callback",
            created.id, created.token
        )
    };
    let body = json!({"type": 4, "data": {"content": "hello"}});
    let queue = |fault: serde_json::Value| {
        raw_request_with(
            addr,
            "POST",
            "/_sim/interactions/faults?count=1",
            Some(fault),
        )
    };

    // Fail: 500 and not taken, so the next attempt is.
    assert_eq!(queue(json!({"kind": "fail"})).await.status, 200);
    let first = create();
    let failed = raw_request_with(addr, "POST", &path(&first), Some(body.clone())).await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    let responses = |id| sim.control().interaction(id).expect("recorded").responses;
    assert!(responses(first.id).is_empty());
    let retried = raw_request_with(addr, "POST", &path(&first), Some(body.clone())).await;
    assert_eq!(retried.status, 204, "{}", retried.body);
    assert_eq!(responses(first.id).len(), 1);

    // Taken, then 500: the member has the answer, and another attempt is
    // "already acknowledged".
    assert_eq!(queue(json!({"kind": "take_then_fail"})).await.status, 200);
    let second = create();
    let lost = raw_request_with(addr, "POST", &path(&second), Some(body.clone())).await;
    assert_eq!(lost.status, 500, "{}", lost.body);
    assert_eq!(responses(second.id).len(), 1);
    let again = raw_request_with(addr, "POST", &path(&second), Some(body.clone())).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["code"], 40060);

    // Held until released, then taken as usual.
    assert_eq!(queue(json!({"kind": "hold"})).await.status, 200);
    let third = create();
    let held_path = path(&third);
    let held_body = body.clone();
    let held =
        tokio::spawn(
            async move { raw_request_with(addr, "POST", &held_path, Some(held_body)).await },
        );
    sim.control()
        .wait_for_held_callbacks(1, WAIT)
        .await
        .expect("the callback is held");
    let count = raw_request(addr, "GET", "/_sim/interactions/held").await;
    assert_eq!(count.json()["held"], 1);
    assert!(responses(third.id).is_empty(), "taken while held");
    let released = raw_request(addr, "POST", "/_sim/interactions/release").await;
    assert_eq!(released.json()["released"], 1);
    assert_eq!(held.await.expect("the held request ends").status, 204);
    assert_eq!(responses(third.id).len(), 1);
    assert_eq!(sim.control().held_callbacks(), 0);
    sim.shutdown().await;
}
