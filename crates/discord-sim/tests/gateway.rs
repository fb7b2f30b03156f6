//! The simulated gateway against real twilight-gateway 0.18 shards.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use discord_sim::{
    shard_for_guild, Fault, GuildsSpec, MemberPatch, NewInteraction, NewMember, SentFrame,
    ShardEvent,
};
use twilight_gateway::{Event, Intents};
use twilight_model::gateway::payload::incoming::{GuildCreate, MemberChunk};
use twilight_model::gateway::payload::outgoing::RequestGuildMembers;
use wire::{GuildId, UserId};

fn guild_create_id(event: &Event) -> Option<u64> {
    match event {
        Event::GuildCreate(create) => match create.as_ref() {
            GuildCreate::Available(guild) => Some(guild.id.get()),
            GuildCreate::Unavailable(_) => None,
        },
        _ => None,
    }
}

fn dispatch_seqs(frames: &std::collections::VecDeque<SentFrame>) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f.op == 0 && f.event.as_deref() != Some("RESUMED"))
        .filter_map(|f| f.seq)
        .collect()
}

/// Waits for READY and `guilds` GUILD_CREATEs; returns the session id.
async fn ready_with_guilds(probe: &mut ShardProbe, guilds: usize) -> String {
    let session = probe
        .expect(WAIT, |e| match e {
            Event::Ready(ready) => Some(ready.session_id.clone()),
            _ => None,
        })
        .await;
    for _ in 0..guilds {
        probe.expect(WAIT, guild_create_id).await;
    }
    session
}

#[tokio::test]
async fn identify_ready_and_guild_creates_reach_the_right_shard() {
    let sim = start(fast_config()).await;
    let guilds = sim.control().create_guilds(&GuildsSpec {
        count: 6,
        members_per_guild: 3,
        roles_per_guild: 1,
    });
    for shard_id in 0..2u32 {
        let expected: BTreeSet<GuildId> = guilds
            .iter()
            .copied()
            .filter(|g| shard_for_guild(*g, 2) == shard_id)
            .collect();
        assert_eq!(expected.len(), 3, "ids spread evenly over shards");
        let mut probe = probe(&sim, shard_id, 2);
        let ready = probe
            .expect(WAIT, |e| match e {
                Event::Ready(ready) => Some(ready.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            ready.shard.map(|s| [s.number(), s.total()]),
            Some([shard_id, 2])
        );
        assert_eq!(ready.resume_gateway_url, sim.gateway_url());
        let in_ready: BTreeSet<GuildId> = ready
            .guilds
            .iter()
            .map(|g| GuildId::from_nonzero(g.id.into_nonzero()))
            .collect();
        assert_eq!(in_ready, expected);
        let mut created = BTreeSet::new();
        while created.len() < expected.len() {
            let id = probe.expect(WAIT, guild_create_id).await;
            created.insert(GuildId::new(id).expect("Twilight ids are not 0"));
        }
        assert_eq!(created, expected, "shard {shard_id}");
        let transcript = sim.control().transcript(shard_id);
        assert_eq!(transcript.identifies, 1);
        assert!(
            transcript.events.iter().any(|e| matches!(
                e,
                ShardEvent::Identified {
                    compressed: true,
                    ..
                }
            )),
            "twilight 0.18 asks for zstd-stream and decodes it"
        );
        assert_eq!(transcript.dispatch_counts.get("GUILD_CREATE"), Some(&3));
        let sent_guilds: BTreeSet<GuildId> = transcript
            .sent
            .iter()
            .filter(|f| f.event.as_deref() == Some("GUILD_CREATE"))
            .filter_map(|f| f.guild_id)
            .collect();
        assert_eq!(sent_guilds, expected);
        probe.task.abort();
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn member_events_and_interactions_arrive_in_order() {
    let sim = start(fast_config()).await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 2,
        roles_per_guild: 2,
    })[0];
    let role = control.guild(guild).expect("guild exists").role_ids[1];
    let mut probe = probe(&sim, 0, 1);
    ready_with_guilds(&mut probe, 1).await;

    let user = control
        .add_member(
            guild,
            NewMember {
                username: Some("alice".into()),
                ..NewMember::default()
            },
        )
        .expect("member added");
    control
        .update_member(
            guild,
            user,
            MemberPatch {
                nick: Some(Some("Al".into())),
                roles: Some(vec![role]),
                pending: Some(false),
            },
        )
        .expect("member updated");
    let interaction = control
        .create_interaction(NewInteraction {
            guild_id: guild,
            user_id: user,
            command_name: "verify".into(),
            options: vec![serde_json::json!({"name": "chain", "type": 4, "value": 1})],
            locale: Some("de".into()),
        })
        .expect("interaction created");
    control.remove_member(guild, user).expect("member removed");

    let mut order = Vec::new();
    while order.len() < 4 {
        let step = probe
            .expect(WAIT, |e| match e {
                Event::MemberAdd(add) => {
                    assert_eq!(add.member.user.id.get(), user);
                    assert_eq!(add.member.user.name, "alice");
                    Some("add")
                }
                Event::MemberUpdate(update) => {
                    assert_eq!(update.nick.as_deref(), Some("Al"));
                    assert_eq!(
                        update.roles.iter().map(|r| r.get()).collect::<Vec<_>>(),
                        vec![role]
                    );
                    Some("update")
                }
                Event::InteractionCreate(create) => {
                    assert_eq!(create.id.get(), interaction.id);
                    assert_eq!(create.token, interaction.token);
                    assert_eq!(
                        create.guild_id.map(twilight_model::id::Id::get),
                        Some(guild.get())
                    );
                    assert_eq!(create.locale.as_deref(), Some("de"));
                    Some("interaction")
                }
                Event::MemberRemove(remove) => {
                    assert_eq!(remove.user.id.get(), user);
                    Some("remove")
                }
                _ => None,
            })
            .await;
        order.push(step);
    }
    assert_eq!(order, ["add", "update", "interaction", "remove"]);
    let seqs = dispatch_seqs(&control.transcript(0).sent);
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers start at 1 and have no gaps"
    );
    probe.task.abort();
    sim.shutdown().await;
}

/// Emits `count` member joins, injecting `fault` after the first half, and
/// checks the client saw every join exactly once, in order, with one identify.
async fn survives_fault(fault: Fault) -> discord_sim::ShardTranscript {
    let sim = start(fast_config()).await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 0,
        roles_per_guild: 0,
    })[0];
    let mut probe = probe(&sim, 0, 1);
    ready_with_guilds(&mut probe, 1).await;

    let mut added = Vec::new();
    for i in 0..40 {
        if i == 20 {
            assert_eq!(control.fault(0, fault.clone()), 1, "one live connection");
        }
        added.push(
            control
                .add_member(guild, NewMember::default())
                .expect("member added"),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    while seen.len() < added.len() {
        seen.push(
            probe
                .expect(Duration::from_secs(15), |e| match e {
                    Event::MemberAdd(add) => Some(add.member.user.id.get()),
                    _ => None,
                })
                .await,
        );
    }
    assert_eq!(seen, added, "every join once, in order");
    let late = probe.collect_for(Duration::from_millis(300)).await;
    let duplicates = late
        .iter()
        .filter(|s| matches!(s, Seen::Event(e) if matches!(e.as_ref(), Event::MemberAdd(_))))
        .count();
    assert_eq!(duplicates, 0, "no join delivered twice");
    let transcript = control.transcript(0);
    assert_eq!(transcript.identifies, 1, "recovered without a new identify");
    probe.task.abort();
    sim.shutdown().await;
    transcript
}

#[tokio::test]
async fn dropped_connection_resumes_without_loss_or_duplicates() {
    let transcript = survives_fault(Fault::Drop).await;
    assert_eq!(transcript.resumes, 1);
}

#[tokio::test]
async fn close_4000_resumes_without_loss_or_duplicates() {
    let transcript = survives_fault(Fault::Close { code: 4000 }).await;
    assert_eq!(transcript.resumes, 1);
}

#[tokio::test]
async fn op7_reconnect_resumes_without_loss_or_duplicates() {
    let transcript = survives_fault(Fault::Reconnect).await;
    assert_eq!(transcript.resumes, 1);
    assert!(transcript.events.iter().any(|e| matches!(
        e,
        ShardEvent::ClosedByClient {
            code: Some(4000),
            ..
        }
    )));
}

#[tokio::test]
async fn op9_resumable_resumes_the_same_session() {
    let transcript = survives_fault(Fault::InvalidSession { resumable: true }).await;
    assert_eq!(transcript.resumes, 1);
}

#[tokio::test]
async fn zombie_connection_is_detected_and_resumed() {
    let started = Instant::now();
    let transcript = survives_fault(Fault::Zombie).await;
    assert_eq!(transcript.resumes, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn op9_not_resumable_starts_a_new_session() {
    let sim = start(fast_config()).await;
    let control = sim.control();
    let guild = control.create_guilds(&GuildsSpec::default())[0];
    let mut probe = probe(&sim, 0, 1);
    let first = ready_with_guilds(&mut probe, 1).await;

    assert_eq!(
        control.fault(0, Fault::InvalidSession { resumable: false }),
        1
    );
    probe
        .expect(WAIT, |e| {
            matches!(e, Event::GatewayInvalidateSession(false)).then_some(())
        })
        .await;
    let second = ready_with_guilds(&mut probe, 1).await;
    assert_ne!(first, second, "a fresh session after a non-resumable op 9");
    let user = control
        .add_member(guild, NewMember::default())
        .expect("member added");
    let seen = probe
        .expect(WAIT, |e| match e {
            Event::MemberAdd(add) => Some(add.member.user.id.get()),
            _ => None,
        })
        .await;
    assert_eq!(seen, user);
    let transcript = control.transcript(0);
    assert_eq!(transcript.identifies, 2);
    assert_eq!(transcript.resumes, 0);
    probe.task.abort();
    sim.shutdown().await;
}

/// The shard ends after a fatal close code; returns the code it reported.
async fn fatal_close(probe: &mut ShardProbe) -> u16 {
    let seen = probe.collect_for(WAIT).await;
    assert!(
        matches!(seen.last(), Some(Seen::Ended)),
        "shard must stop: {seen:?}"
    );
    seen.iter()
        .find_map(|s| match s {
            Seen::Event(e) => match e.as_ref() {
                Event::GatewayClose(Some(frame)) => Some(frame.code),
                _ => None,
            },
            _ => None,
        })
        .expect("a close frame was reported")
}

#[tokio::test]
async fn bad_token_closes_with_4004_and_the_shard_stops() {
    let sim = start(fast_config()).await;
    let shard = twilight_shard(&sim, 0, 1, "wrong-token", Intents::GUILDS);
    let mut probe = spawn_shard(shard);
    assert_eq!(fatal_close(&mut probe).await, 4004);
    sim.shutdown().await;
}

#[tokio::test]
async fn disallowed_intents_close_with_4014() {
    let sim = start(fast_config()).await;
    let shard = twilight_shard(
        &sim,
        0,
        1,
        TOKEN,
        Intents::GUILDS | Intents::GUILD_PRESENCES,
    );
    let mut probe = spawn_shard(shard);
    assert_eq!(fatal_close(&mut probe).await, 4014);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_shard_close_4010_stops_the_shard() {
    let sim = start(fast_config()).await;
    let mut probe = probe(&sim, 0, 1);
    ready_with_guilds(&mut probe, 0).await;
    assert_eq!(sim.control().fault(0, Fault::Close { code: 4010 }), 1);
    assert_eq!(fatal_close(&mut probe).await, 4010);
    sim.shutdown().await;
}

#[tokio::test]
async fn identify_is_spaced_per_max_concurrency_bucket() {
    let config = discord_sim::SimConfig {
        identify_interval_ms: 1_000,
        max_concurrency: 1,
        ..fast_config()
    };
    let sim = start(config).await;
    let mut first = probe(&sim, 0, 2);
    let mut second = probe(&sim, 1, 2);
    let ready = |e: &Event| matches!(e, Event::Ready(_)).then(Instant::now);
    let (a, b) = tokio::join!(first.expect(WAIT, ready), second.expect(WAIT, ready));
    let gap = if a > b { a - b } else { b - a };
    assert!(
        gap >= Duration::from_millis(900),
        "identifies {gap:?} apart"
    );
    let limited = (0..2)
        .flat_map(|s| sim.control().transcript(s).events)
        .filter(|e| matches!(e, ShardEvent::IdentifyRateLimited { .. }))
        .count();
    assert!(limited >= 1, "the early identify was answered with op 9");
    first.task.abort();
    second.task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn guild_delete_distinguishes_removal_from_outage() {
    let sim = start(fast_config()).await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 1,
        roles_per_guild: 0,
    });
    let mut probe = probe(&sim, 0, 1);
    ready_with_guilds(&mut probe, 2).await;
    control.remove_guild(guilds[0]).expect("removed");
    control.guild_outage(guilds[1]).expect("outage");
    control.restore_guild(guilds[1]).expect("restored");
    let removed = probe
        .expect(WAIT, |e| match e {
            Event::GuildDelete(d) => Some((d.id.get(), d.unavailable)),
            _ => None,
        })
        .await;
    assert_eq!(removed, (guilds[0].get(), None));
    let outage = probe
        .expect(WAIT, |e| match e {
            Event::GuildDelete(d) => Some((d.id.get(), d.unavailable)),
            _ => None,
        })
        .await;
    assert_eq!(outage, (guilds[1].get(), Some(true)));
    assert_eq!(probe.expect(WAIT, guild_create_id).await, guilds[1]);
    probe.task.abort();
    sim.shutdown().await;
}

fn member_chunk(event: &Event) -> Option<MemberChunk> {
    match event {
        Event::MemberChunk(chunk) => Some(chunk.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn twilight_requests_members_and_reads_the_chunks() {
    let sim = start(fast_config()).await;
    let guild = sim.control().create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 1_500,
        roles_per_guild: 1,
    })[0];
    let shard = twilight_shard(&sim, 0, 1, TOKEN, Intents::GUILDS | Intents::GUILD_MEMBERS);
    let sender = shard.sender();
    let mut probe = spawn_shard(shard);
    ready_with_guilds(&mut probe, 1).await;
    let twilight_guild = twilight_model::id::Id::new(guild.get());

    let everyone = RequestGuildMembers::builder(twilight_guild)
        .nonce("everyone")
        .query("", None);
    sender.command(&everyone).expect("queued");
    let first = probe.expect(WAIT, member_chunk).await;
    let second = probe.expect(WAIT, member_chunk).await;
    let shape = |c: &MemberChunk| {
        (
            c.chunk_index,
            c.chunk_count,
            c.members.len(),
            c.nonce.clone(),
        )
    };
    let nonce = Some("everyone".to_owned());
    assert_eq!(shape(&first), (0, 2, 1_000, nonce.clone()));
    assert_eq!(shape(&second), (1, 2, 500, nonce));
    let seen: BTreeSet<u64> = first
        .members
        .iter()
        .chain(&second.members)
        .map(|m| m.user.id.get())
        .collect();
    let members: BTreeSet<u64> = testkit::sim::member_ids(&sim, guild)
        .iter()
        .map(|id| id.get())
        .collect();
    assert_eq!(seen, members);

    // Twilight sends a single id as a bare snowflake, not a list.
    let stranger = twilight_model::id::Id::new(4242);
    let one = RequestGuildMembers::builder(twilight_guild)
        .nonce("one")
        .user_id(stranger);
    sender.command(&one).expect("queued");
    let chunk = probe.expect(WAIT, member_chunk).await;
    assert!(chunk.members.is_empty());
    assert_eq!(chunk.not_found, [stranger]);
    assert_eq!(chunk.nonce.as_deref(), Some("one"));

    let transcript = sim.control().transcript(0);
    let requests: Vec<_> = transcript
        .member_requests()
        .map(|r| (r.guild_id, r.nonce.as_deref(), r.user_ids.clone()))
        .collect();
    let stranger = UserId::new(4242).expect("not 0");
    assert_eq!(
        requests,
        [
            (guild, Some("everyone"), None),
            (guild, Some("one"), Some(vec![stranger]))
        ]
    );
    probe.task.abort();
    sim.shutdown().await;
}
