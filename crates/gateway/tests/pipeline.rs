//! The gateway end to end: real Twilight shards against the simulator,
//! publishing into a real (private) NATS JetStream.

mod common;

use std::time::Duration;

use common::*;
use discord_sim::{
    shard_for_guild, Fault, GuildsSpec, MemberPatch, NewInteraction, NewMember, ShardEvent,
    TrafficMix, TrafficSpec,
};
use testkit::http;
use testkit::nats::{self, NatsServer};
use testkit::sim::assert_exactly_once;
use wire::{EventType, Payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_jetstream_once_over_two_shards() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 6,
        members_per_guild: 3,
        roles_per_guild: 2,
    });
    let gateway = start(settings(&sim, &nats, "0-1", 2), &nats).await;
    until_ready(&gateway, "at start").await;

    // One of each kind of event, on guilds of both shards.
    let mut joined = Vec::new();
    for &guild in &guilds {
        let user = control
            .add_member(
                guild,
                NewMember {
                    username: Some(format!("user-of-{guild}")),
                    ..NewMember::default()
                },
            )
            .expect("member added");
        joined.push((guild, user));
    }
    let (g0, u0) = joined[0];
    let role = control.guild(g0).expect("guild").role_ids[1];
    control
        .update_member(
            g0,
            u0,
            MemberPatch {
                nick: Some(Some("nick".into())),
                roles: Some(vec![role]),
                pending: Some(false),
            },
        )
        .expect("member updated");
    control
        .create_interaction(NewInteraction {
            guild_id: g0,
            user_id: u0,
            command_name: "verify".into(),
            options: vec![serde_json::json!({"name": "chain", "type": 4, "value": 1})],
            locale: Some("en-US".into()),
        })
        .expect("interaction created");
    control
        .remove_member(guilds[1], joined[1].1)
        .expect("member removed");
    control.guild_outage(guilds[2]).expect("outage");
    control.remove_guild(guilds[3]).expect("bot removed");

    let events = assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    let commands = assert_exactly_once(&sim, &nats.access(), "COMMANDS", 0..2, "").await;

    // Every envelope came from the shard Discord routes its guild to.
    for stored in events.iter().chain(&commands) {
        let guild = stored.envelope.guild_id.expect("guild events have a guild");
        assert_eq!(stored.envelope.shard_id, shard_for_guild(guild, 2));
        assert_eq!(stored.envelope.version, wire::VERSION);
    }
    let count = |t: EventType| {
        events
            .iter()
            .filter(|s| s.envelope.event_type() == Some(t))
            .count()
    };
    assert_eq!(count(EventType::GuildJoin), 6);
    assert_eq!(count(EventType::MemberJoin), 6);
    assert_eq!(count(EventType::MemberUpdate), 1);
    assert_eq!(count(EventType::MemberLeave), 1);
    assert_eq!(
        count(EventType::GuildUnavailable),
        1,
        "an outage is not a leave"
    );
    assert_eq!(count(EventType::GuildLeave), 1);
    let leave = events
        .iter()
        .find(|s| s.envelope.event_type() == Some(EventType::GuildLeave))
        .expect("guild.leave");
    assert_eq!(leave.envelope.guild_id, Some(guilds[3]));
    let outage = events
        .iter()
        .find(|s| s.envelope.event_type() == Some(EventType::GuildUnavailable))
        .expect("guild.unavailable");
    assert_eq!(outage.envelope.guild_id, Some(guilds[2]));

    let join = events
        .iter()
        .find(|s| s.envelope.user_id == Some(u0))
        .expect("member.join of the first user");
    let Payload::MemberJoin(data) = &join.envelope.payload else {
        panic!("expected member.join, got {:?}", join.envelope.payload)
    };
    assert_eq!(data.username, format!("user-of-{g0}"));
    assert_eq!(join.envelope.guild_id, Some(g0));

    assert_eq!(commands.len(), 1);
    let Payload::InteractionCreate(interaction) = &commands[0].envelope.payload else {
        panic!("expected interaction.create")
    };
    assert_eq!(interaction.command_name.as_deref(), Some("verify"));
    assert_eq!(commands[0].envelope.user_id, Some(u0));

    let (status, metrics) = http::get(gateway.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("gateway_events_published_total")
            && metrics.contains("gateway_publish_latency_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(http::get(gateway.http_addr(), "/healthz").await.0, 200);

    let summary = gateway.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.sessions_saved, 2);
    assert_eq!(summary.publish.abandoned, 0);
    sim.shutdown().await;
}

/// Member joins before and after `fault` on a one-shard gateway; every
/// dispatch the simulator sent must be in the stream exactly once. Returns
/// the shard's transcript.
///
/// With `every_join`, each join must be there too (a resumed session replays
/// what the client missed; a new session after op 9 `false` does not, as on
/// Discord, and sends the guild's state in GUILD_CREATE instead).
async fn survives(fault: Fault, every_join: bool) -> discord_sim::ShardTranscript {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 2,
        roles_per_guild: 1,
    })[0];
    let gateway = start(settings(&sim, &nats, "0", 1), &nats).await;
    until_ready(&gateway, "at start").await;

    let mut users = Vec::new();
    for i in 0..40 {
        if i == 20 {
            assert_eq!(
                control.fault(0, fault.clone()),
                1,
                "fault reached the shard"
            );
        }
        users.push(
            control
                .add_member(guild, NewMember::default())
                .expect("member added"),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if every_join {
        // A zombie connection delivers nothing until Twilight notices it:
        // wait for the joins themselves, not only for what was sent so far.
        let access = nats.access();
        testkit::eventually("every member.join in EVENTS", WAIT, || async {
            nats::read_stream(&access, "EVENTS")
                .await
                .iter()
                .filter(|s| s.envelope.event_type() == Some(EventType::MemberJoin))
                .count()
                >= users.len()
        })
        .await;
    }
    let stored = assert_exactly_once(&sim, &nats.access(), "EVENTS", [0], "").await;
    // Beyond matching the simulator: each join we caused is there.
    for user in users.iter().filter(|_| every_join) {
        assert!(
            stored.iter().any(|s| s.envelope.user_id == Some(*user)
                && s.envelope.event_type() == Some(EventType::MemberJoin)),
            "member.join of {user} missing"
        );
    }
    until_ready(&gateway, "after the fault").await;
    let transcript = control.transcript(0);
    gateway.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
    transcript
}

fn resumed(transcript: &discord_sim::ShardTranscript) -> bool {
    transcript
        .events
        .iter()
        .any(|e| matches!(e, ShardEvent::Resumed { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_without_loss_or_duplicates() {
    let t = survives(Fault::Drop, true).await;
    assert!(resumed(&t), "expected a Resume: {:?}", t.events);
    assert_eq!(t.identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_close_resumes() {
    let t = survives(Fault::Close { code: 4000 }, true).await;
    assert!(resumed(&t), "expected a Resume: {:?}", t.events);
    assert_eq!(t.identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op7_reconnect_resumes() {
    let t = survives(Fault::Reconnect, true).await;
    assert!(resumed(&t), "expected a Resume: {:?}", t.events);
    assert_eq!(t.identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op9_resumable_resumes() {
    let t = survives(Fault::InvalidSession { resumable: true }, true).await;
    assert!(resumed(&t), "expected a Resume: {:?}", t.events);
    assert_eq!(t.identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op9_not_resumable_identifies_again() {
    let t = survives(Fault::InvalidSession { resumable: false }, false).await;
    assert_eq!(t.identifies, 2, "a new session after op 9 false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_connection_is_detected_and_resumed() {
    let t = survives(Fault::Zombie, true).await;
    assert!(resumed(&t), "expected a Resume: {:?}", t.events);
    assert_eq!(t.identifies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_blocks_then_delivers_everything_once() {
    let mut nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 4,
        members_per_guild: 2,
        roles_per_guild: 1,
    });
    let mut s = settings(&sim, &nats, "0-1", 2);
    // A tiny buffer, so that the outage fills it and backpressure stops the
    // shards from being read: nothing may be dropped either way.
    s.publish_buffer = Some(4);
    s.publish_window = Some(2);
    s.publish_ack_timeout = Some("500ms".into());
    let gateway = start(s, &nats).await;
    until_ready(&gateway, "at start").await;

    let traffic = |events| TrafficSpec {
        events,
        rate_per_second: Some(400.0),
        mix: TrafficMix {
            member_join: 2,
            member_leave: 1,
            member_update: 2,
            interaction: 0,
        },
        guilds: guilds.clone(),
        ..TrafficSpec::default()
    };
    control.start_traffic(traffic(100)).wait().await;
    nats.stop();
    testkit::eventually("/readyz to turn unready with NATS down", WAIT, || async {
        !ready(&gateway).await
    })
    .await;
    let (status, body) = http::get(gateway.http_addr(), "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("\"nats_connected\":false"), "{body}");

    // Events keep coming while NATS is down; the gateway must hold them.
    control.start_traffic(traffic(200)).wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.resume();

    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    until_ready(&gateway, "after NATS came back").await;
    let summary = gateway.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.publish.abandoned, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_its_sessions() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 4,
        members_per_guild: 2,
        roles_per_guild: 1,
    });
    let first = start(settings(&sim, &nats, "0-1", 2), &nats).await;
    until_ready(&first, "at start").await;
    for &g in &guilds {
        control
            .add_member(g, NewMember::default())
            .expect("member added");
    }
    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    let summary = first.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.sessions_saved, 2);
    for shard in 0..2 {
        // Closing must not turn into a reconnect and resume of its own.
        assert_eq!(control.transcript(shard).resumes, 0, "shard {shard}");
    }

    // Events while no gateway runs: Discord keeps them for the session.
    for &g in &guilds {
        control
            .add_member(g, NewMember::default())
            .expect("member added");
    }
    let second = start(settings(&sim, &nats, "0-1", 2), &nats).await;
    until_ready(&second, "at start").await;
    let stored = assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    assert_eq!(
        stored
            .iter()
            .filter(|s| s.envelope.event_type() == Some(EventType::MemberJoin))
            .count(),
        8
    );
    for shard in 0..2 {
        let t = control.transcript(shard);
        assert_eq!(t.identifies, 1, "shard {shard} identified again");
        assert!(resumed(&t), "shard {shard} did not resume: {:?}", t.events);
    }
    second.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_keeps_tests_apart_on_a_shared_server() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    sim.control().create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 1,
        roles_per_guild: 1,
    });
    let mut s = settings(&sim, &nats, "0", 1);
    s.nats_namespace = Some("ns1".into());
    let gateway = start(s, &nats).await;
    until_ready(&gateway, "at start").await;
    let stored = assert_exactly_once(&sim, &nats.access(), "ns1_EVENTS", [0], "ns1.").await;
    // Each guild, and (once asked for) its member list.
    assert_eq!(
        stored
            .iter()
            .filter(|s| s.envelope.event_type() == Some(EventType::GuildJoin))
            .count(),
        2
    );
    assert!(stored.iter().all(|s| matches!(
        s.envelope.event_type(),
        Some(EventType::GuildJoin | EventType::MembersChunk)
    )));
    assert_eq!(nats::stream_len(&nats.access(), "EVENTS").await, 0);
    gateway.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_resume_url_in_the_session_bucket_never_receives_the_token() {
    // Whoever can write the session bucket could point a shard's resume at
    // a server of theirs, which would receive the bot token in the Resume.
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    control.create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 1,
        roles_per_guild: 1,
    });
    let first = start(settings(&sim, &nats, "0-1", 2), &nats).await;
    until_ready(&first, "at start").await;
    let summary = first.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.sessions_saved, 2);

    // The attacker's listener, and the stored sessions pointed at it (by
    // the admin user: no other may write the bucket, see the bus tests).
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("ws://{}", trap.local_addr().unwrap());
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = caught.clone();
    let listener = tokio::spawn(async move {
        while let Ok((_socket, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let kv = nats
        .access()
        .jetstream(bus::Process::Admin)
        .await
        .get_key_value(bus::Topology::new(bus::Namespace::root()).sessions_bucket())
        .await
        .unwrap();
    for shard in 0..2 {
        let key = gateway::sessions::key(shard, 2);
        let stored = kv.get(&key).await.unwrap().expect("a stored session");
        let mut session: gateway::sessions::StoredSession =
            serde_json::from_slice(&stored).unwrap();
        session.resume_url = Some(trap_url.clone());
        kv.put(&key, serde_json::to_vec(&session).unwrap().into())
            .await
            .unwrap();
    }

    let second = start(settings(&sim, &nats, "0-1", 2), &nats).await;
    until_ready(&second, "after the forged sessions").await;
    assert_eq!(
        caught.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a shard connected to the forged resume URL"
    );
    for shard in 0..2 {
        // It identified afresh at the configured gateway instead.
        assert_eq!(control.transcript(shard).identifies, 2, "shard {shard}");
    }
    listener.abort();
    second.shutdown().await.expect("clean shutdown");
    sim.shutdown().await;
}
