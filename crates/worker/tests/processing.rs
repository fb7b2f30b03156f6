//! The worker against a real NATS JetStream and a real PostgreSQL.

mod common;

use std::time::Duration;

use common::{guild_join, member_join, member_leave, AsId, Harness};
use wire::{Envelope, Payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guild_and_member_events_become_communities_profiles_and_audit_rows() {
    let mut h = Harness::new("worker_membership").await;
    h.start_worker();
    h.publish(&guild_join(111, "s1", 1)).await;
    // Events for members may overtake their guild; give the guild a head
    // start anyway so this test is about the happy path.
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    for user in 1..=20u64 {
        h.publish(&member_join(111, user, "s1", 1 + user)).await;
    }
    h.publish(&member_leave(111, 3, "s1", 100)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 20).await,
        20
    );
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles WHERE left_at IS NOT NULL", 1)
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined' AND actor_type = 'system'")
            .await,
        20
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'community.provisioned'")
            .await,
        1
    );
    let tier: String =
        h.db.admin()
            .await
            .query_one(
                "SELECT subscription_tier || '/' || theme_id FROM communities",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(tier, "free/default");
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_redeliveries_have_one_effect() {
    let mut h = Harness::new("worker_duplicates").await;
    h.start_worker();
    let join = guild_join(222, "s1", 1);
    h.publish(&join).await;
    // The same envelope under other message ids gets past JetStream's
    // dedupe window: only the worker's idempotency stands in the way.
    h.publish_with_msg_id(&join, "copy-1").await;
    h.publish_with_msg_id(&join, "copy-2").await;
    let member = member_join(222, 9, "s1", 2);
    for i in 0..5 {
        h.publish_with_msg_id(&member, &format!("member-copy-{i}"))
            .await;
    }
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM processed_events", 2)
            .await,
        2
    );
    // Count effects only once every copy has been handled.
    h.drained().await;
    let joined = h
        .count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
        .await;
    if joined != 1 {
        let actions: Vec<String> =
            h.db.column("SELECT action || ' ' || metadata::text FROM audit_logs ORDER BY id")
                .await;
        panic!(
            "member.joined audited {joined} times; audit: {actions:?}; dead letters: {:?}",
            h.dead_letters().await
        );
    }
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'community.provisioned'")
            .await,
        1
    );
    assert_eq!(h.count("SELECT count(*) FROM audit_logs").await, 2);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_the_stream_moves_on() {
    let mut h = Harness::new("worker_poison").await;
    h.start_worker();
    h.publish_raw(wire::subjects::MEMBER_JOIN, b"{not json")
        .await;
    h.publish(&guild_join(333, "s1", 1)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, h.nats.ns.subject("dead.events.member.join"));
    assert!(dead[0].1.contains("undecodable envelope"), "{}", dead[0].1);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_event_waits_for_its_guild_then_gives_up_into_the_dead_letters() {
    let mut h = Harness::new("worker_retry").await;
    h.start_worker();
    // The member arrives before its guild: retried, then applied.
    h.publish(&member_join(444, 1, "s1", 2)).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    h.publish(&guild_join(444, "s1", 1)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 1).await,
        1
    );
    // A guild that never comes: bounded retries, then a dead letter.
    h.publish(&member_join(555, 1, "s1", 3)).await;
    testkit::eventually("a dead letter", common::WAIT, || async {
        !h.dead_letters().await.is_empty()
    })
    .await;
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.contains("gave up after 3 attempts"),
        "{}",
        dead[0].1
    );
    assert!(dead[0].1.contains("555"), "{}", dead[0].1);
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_loses_nothing() {
    let mut h = Harness::new("worker_restart").await;
    h.publish(&guild_join(666, "s1", 1)).await;
    const MEMBERS: u64 = 300;
    for user in 1..=MEMBERS {
        h.publish(&member_join(666, user, "s1", 1 + user)).await;
    }
    h.start_worker();
    // Kill it once it is part-way through.
    testkit::eventually("the worker to apply some joins", common::WAIT, || async {
        h.count("SELECT count(*) FROM profiles").await > 20
    })
    .await;
    h.kill_worker();
    let at_kill = h.count("SELECT count(*) FROM profiles").await;
    assert!(
        at_kill < MEMBERS as i64,
        "the worker finished before it could be killed"
    );
    h.start_worker();
    h.assert_each_join_applied_once(MEMBERS).await;
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_stream_and_each_event_has_one_effect() {
    let mut h = Harness::new("worker_scale_out").await;
    h.publish(&guild_join(777, "s1", 1)).await;
    const MEMBERS: u64 = 300;
    for user in 1..=MEMBERS {
        h.publish(&member_join(777, user, "s1", 1 + user)).await;
    }
    // A second process: same configuration, so the same durable consumers,
    // with a connection pool of its own to tell whether it took any work
    // (a worker without role sync touches the database only for messages).
    let other_store = h.db.store(8).await;
    let stop_other = tokio_util::sync::CancellationToken::new();
    let other = tokio::spawn(worker::run(
        h.config.clone(),
        h.nats.jetstream(bus::Process::Worker).await,
        other_store.clone(),
        None,
        stop_other.clone(),
    ));
    h.start_worker();
    h.assert_each_join_applied_once(MEMBERS).await;
    let (opened_by_other, _) = other_store.pool_status();
    let (opened_by_first, _) = h.store.pool_status();
    assert!(
        opened_by_other > 0 && opened_by_first > 0,
        "one worker did all the work: pools {opened_by_first} and {opened_by_other}"
    );
    stop_other.cancel();
    other.await.unwrap().unwrap();
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_event_ids_are_forgotten_once_the_streams_no_longer_hold_their_events() {
    let mut h = Harness::new("worker_prune").await;
    // Streams that keep a message for 3 s, so its id may go after that.
    for limits in [
        &mut h.config.topology.events,
        &mut h.config.topology.commands,
    ] {
        limits.max_age = Duration::from_secs(3);
        limits.duplicate_window = Duration::from_secs(1);
    }
    bus::update_streams(&h.nats.js, &h.config.topology)
        .await
        .unwrap();
    h.config.prune_interval = Duration::from_millis(200);
    h.start_worker();
    h.publish(&guild_join(333, "s1", 1)).await;
    h.publish(&member_join(333, 7, "s1", 2)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM processed_events", 2)
            .await,
        2
    );
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM processed_events", 0)
            .await,
        0,
        "processed ids outlived the streams' max age"
    );
    // What the ids guarded is still there; only the bookkeeping went.
    assert_eq!(
        h.count("SELECT count(*) FROM profiles WHERE left_at IS NULL")
            .await,
        1
    );
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_discord_leaves_eligibility_checks_to_its_peers() {
    // A worker without a Discord token cannot sync roles; if it consumed
    // `eligibility.check` it would acknowledge and drop checks its peers
    // could have handled.
    let mut h = Harness::new("worker_no_discord_checks").await;
    h.start_worker();
    h.publish(&guild_join(444, "s1", 1)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    let check = wire::check::EligibilityCheck {
        id: "check:no-discord".into(),
        guild_id: wire::GuildId::new(444).unwrap(),
        user_id: None,
        more_user_ids: vec![],
        reason: "test".into(),
        priority: wire::check::CheckPriority::Bulk,
        requested_at: 0,
    };
    bus::publish_check(&h.nats.js, &h.nats.ns, &check)
        .await
        .unwrap();
    // The worker is consuming events (the join above went through); give it
    // a later event and wait for that too, so it had every chance to take
    // the check meanwhile.
    h.publish(&member_join(444, 9, "s1", 2)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 1).await,
        1
    );
    let stream = h.nats.ns.stream_name(&wire::subjects::ELIGIBILITY);
    let mut stream = h.nats.js.get_stream(&stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1, "the check is stored");
    // Whatever consumers the stream has, none delivered the check.
    let mut taken = 0;
    let mut consumers = stream.consumers();
    while let Some(info) = futures::StreamExt::next(&mut consumers).await {
        taken += info.unwrap().delivered.stream_sequence;
    }
    assert_eq!(
        taken, 0,
        "a worker without Discord took an eligibility check"
    );
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_allowlist_only_approved_servers_get_a_community() {
    let mut h = Harness::new("worker_allowlist").await;
    h.config.provisioning = worker::Provisioning::parse("allowlist:111").expect("a valid policy");
    h.start_worker();
    for guild in [111, 222] {
        h.publish(&guild_join(guild, "s1", guild)).await;
        h.publish(&member_join(guild, 5, "s1", guild + 1)).await;
    }
    h.drained().await;
    let guilds: Vec<i64> =
        h.db.column("SELECT discord_guild_id FROM communities ORDER BY 1")
            .await;
    assert_eq!(guilds, [111], "only the approved server was provisioned");
    assert_eq!(h.count("SELECT count(*) FROM profiles").await, 1);
    assert!(
        h.dead_letters().await.is_empty(),
        "dropped, not dead-lettered"
    );
    h.stop_worker().await;
}

#[test]
fn provisioning_policies_parse_and_bad_ones_say_why() {
    use worker::Provisioning;
    assert_eq!(Provisioning::parse("open"), Ok(Provisioning::Open));
    let Ok(Provisioning::Allowlist(ids)) = Provisioning::parse("allowlist:1, 2,") else {
        panic!("an allowlist");
    };
    assert_eq!(ids.len(), 2);
    assert!(Provisioning::parse("closed")
        .unwrap_err()
        .contains("neither"));
    assert!(Provisioning::parse("allowlist:x")
        .unwrap_err()
        .contains("\"x\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_past_the_retention_are_pruned_by_the_worker() {
    let mut h = Harness::new("worker_audit_retention").await;
    h.config.audit_retention = Some(Duration::from_secs(2 * 24 * 3600));
    h.config.prune_interval = Duration::from_millis(200);
    h.start_worker();
    h.publish(&guild_join(555, "s1", 1)).await;
    h.publish(&member_join(555, 7, "s1", 2)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 1).await,
        1
    );
    let all = h.count("SELECT count(*) FROM audit_logs").await;
    assert!(all >= 2, "the join and the member left audit rows");
    // One row is three days old, past the two-day retention.
    h.db.admin()
        .await
        .batch_execute(
            "UPDATE audit_logs SET created_at = now() - interval '3 days'
             WHERE id = (SELECT min(id) FROM audit_logs)",
        )
        .await
        .unwrap();
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM audit_logs", all - 1)
            .await,
        all - 1,
        "the old row outlived the retention"
    );
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_flooding_the_stream_delays_only_itself() {
    let mut h = Harness::new("worker_fairness").await;
    h.publish(&guild_join(801, "s1", 1)).await;
    h.publish(&guild_join(802, "s1", 2)).await;
    // Fifteen hundred joins in one server reach the stream before one join
    // in another, and only then does the worker start.
    const FLOOD: u64 = 1_500;
    for user in 1..=FLOOD {
        h.publish(&member_join(801, user, "s1", 2 + user)).await;
    }
    h.publish(&member_join(802, 1, "s1", FLOOD + 3)).await;
    h.start_worker();
    let profiles_in = |guild: i64| {
        format!(
            "SELECT count(*) FROM profiles p JOIN communities c ON c.id = p.community_id \
             WHERE c.discord_guild_id = {guild}"
        )
    };
    assert_eq!(h.wait_for_count(&profiles_in(802), 1).await, 1);
    let flood_done = h.count(&profiles_in(801)).await;
    // In stream order the quiet server's join would wait for all 1,500; it
    // is taken once the worker has read past the flood, which it does
    // without waiting for the flood to be applied.
    assert!(
        flood_done < (FLOOD / 2) as i64,
        "the quiet server's join waited for {flood_done} of the flood's {FLOOD}"
    );
    // Deferring the flood's messages loses and duplicates nothing.
    h.assert_each_join_applied_once(FLOOD + 1).await;
    h.stop_worker().await;
}

fn member_update(guild: u64, user: u64, seq: u64, role: u64) -> Envelope {
    Envelope::for_dispatch(
        0,
        "s1",
        seq,
        1_700_000_000_000 + seq as i64,
        Payload::MemberUpdate(wire::payload::MemberUpdate {
            username: format!("user{user}"),
            nick: None,
            roles: vec![role.id()],
            pending: false,
        }),
    )
    .with_guild(guild.id())
    .with_user(user.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_servers_member_events_are_applied_in_batches_each_once_and_in_order() {
    let mut h = Harness::new("worker_batches").await;
    // Stream order holds unless a message is redelivered; the harness's
    // short ack_wait (for its kill tests) could redeliver one of a slow
    // batch on a loaded machine.
    h.config.ack_wait = Duration::from_secs(15);
    h.start_worker();
    h.publish(&guild_join(901, "s1", 1)).await;
    h.publish(&guild_join(902, "s1", 2)).await;
    h.wait_for_count("SELECT count(*) FROM communities", 2)
        .await;
    h.stop_worker().await;

    // A backlog of one server's joins, updates and leaves, with another
    // server's joins in between and copies of earlier joins (what a worker
    // that died between its commit and its acks leaves behind).
    let mut seq = 10;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut joins = Vec::new();
    for user in 1..=200 {
        let join = member_join(901, user, "s1", next());
        h.publish(&join).await;
        joins.push(join);
        if user % 10 == 0 {
            h.publish(&member_join(902, user, "s1", next())).await;
        }
    }
    for user in 1..=100 {
        h.publish(&member_update(901, user, next(), 7)).await;
    }
    for user in 1..=50 {
        h.publish(&member_leave(901, user, "s1", next())).await;
    }
    for (n, join) in joins.iter().take(30).enumerate() {
        h.publish_with_msg_id(join, &format!("copy-{n}")).await;
    }
    h.start_worker();
    h.drained().await;

    let of_901 = |condition: &str| {
        format!(
            "SELECT count(*) FROM profiles p JOIN communities c ON c.id = p.community_id \
             WHERE c.discord_guild_id = 901 AND {condition}"
        )
    };
    assert_eq!(h.count(&of_901("true")).await, 200);
    assert_eq!(h.count(&of_901("left_at IS NOT NULL")).await, 50);
    // The last event of each member decides: updated (then some left,
    // keeping their roles), or as they joined.
    let updated = h.count(&of_901("role_ids = '{7}'")).await;
    if updated != 100 {
        let rows: Vec<String> =
            h.db.column(
                "SELECT discord_user_id || ' ' || role_ids::text || ' seq ' || last_event_seq \
                 FROM profiles p JOIN communities c ON c.id = p.community_id \
                 WHERE c.discord_guild_id = 901 AND discord_user_id <= 100 \
                 AND role_ids <> '{7}' ORDER BY 1",
            )
            .await;
        panic!("{updated} of 100 members have their update; not (user roles seq): {rows:?}");
    }
    assert_eq!(h.count(&of_901("role_ids = '{5}'")).await, 100);
    for (action, want) in [
        ("member.joined", 220),
        ("member.updated", 100),
        ("member.left", 50),
    ] {
        assert_eq!(
            h.count(&format!(
                "SELECT count(*) FROM audit_logs WHERE action = '{action}'"
            ))
            .await,
            want,
            "{action} audited other than once per event"
        );
    }
    // Claimed by far fewer transactions than events (rows written by one
    // transaction share its xmin).
    let transactions = h
        .count(
            "SELECT count(DISTINCT e.xmin::text) FROM processed_events e \
             JOIN communities c ON c.id = e.community_id WHERE c.discord_guild_id = 901",
        )
        .await;
    assert!(
        transactions <= 350 / 4,
        "350 member events of one server took {transactions} transactions"
    );
    assert!(h.dead_letters().await.is_empty());
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_in_a_batch_is_dead_lettered_alone() {
    let mut h = Harness::new("worker_batch_poison").await;
    h.start_worker();
    h.publish(&guild_join(911, "s1", 1)).await;
    h.wait_for_count("SELECT count(*) FROM communities", 1)
        .await;
    h.stop_worker().await;
    for user in 1..=20 {
        h.publish(&member_join(911, user, "s1", 10 + user)).await;
    }
    // Decodes, but no database column can hold its user id: the batch it
    // lands in fails as a whole.
    h.publish(&member_join(911, u64::MAX, "s1", 31)).await;
    for user in 21..=40 {
        h.publish(&member_join(911, user, "s1", 11 + user)).await;
    }
    h.start_worker();
    h.assert_each_join_applied_once(40).await;
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, h.nats.ns.subject("dead.events.member.join"));
    assert!(dead[0].1.contains("discord_user_id"), "{}", dead[0].1);
    h.stop_worker().await;
}

fn chunk(
    guild: u64,
    seq: u64,
    nonce: &str,
    index: u32,
    count: u32,
    users: &[(u64, Vec<u64>)],
) -> Envelope {
    Envelope::for_dispatch(
        0,
        "s1",
        seq,
        1_700_000_000_000 + seq as i64,
        Payload::MembersChunk(wire::payload::MembersChunk {
            members: users
                .iter()
                .map(|(user, roles)| wire::payload::ChunkMember {
                    user_id: user.id(),
                    member: wire::payload::MemberJoin {
                        username: format!("user{user}"),
                        roles: roles.iter().map(|r| r.id()).collect(),
                        joined_at: Some(1_600_000_000_000),
                        ..Default::default()
                    },
                })
                .collect(),
            chunk_index: index,
            chunk_count: count,
            nonce: Some(nonce.to_owned()),
        }),
    )
    .with_guild(guild.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_member_list_arrives_in_chunks_and_is_synced_once() {
    let mut h = Harness::new("worker_member_sync").await;
    h.start_worker();
    h.publish(&guild_join(333, "s1", 1)).await;
    // A guild's events wait for it to be provisioned (and are retried in
    // any order meanwhile): let it be, so that stream order is the order.
    h.wait_for_count("SELECT count(*) FROM communities", 1)
        .await;
    // Known before the sync: members 1 to 5. Member 5 left while the bot
    // was away (in no chunk); member 3's update is older than the list.
    for user in 1..=5u64 {
        h.publish(&member_join(333, user, "s1", 1 + user)).await;
    }
    h.publish(&member_update(333, 3, 10, 55)).await;
    let members = |users: &mut dyn Iterator<Item = u64>| -> Vec<(u64, Vec<u64>)> {
        users
            .map(|u| (u, if u == 1 { vec![77] } else { Vec::new() }))
            .collect()
    };
    let first = chunk(
        333,
        20,
        "sync-a",
        0,
        3,
        &members(&mut (1..=4).chain(6..=1001)),
    );
    let second = chunk(333, 21, "sync-a", 1, 3, &members(&mut (1002..=2001)));
    h.publish(&first).await;
    // An event after the list was sent wins over it.
    h.publish(&member_update(333, 2, 30, 99)).await;
    h.publish(&second).await;
    // The same chunk again (a gateway republishing after a crash, past
    // JetStream's dedupe): ingested and counted once.
    h.publish_with_msg_id(&second, "second-again").await;
    h.publish(&chunk(
        333,
        22,
        "sync-a",
        2,
        3,
        &members(&mut (2002..=2501)),
    ))
    .await;

    assert_eq!(
        h.wait_for_count(
            "SELECT count(*) FROM member_syncs WHERE completed_at IS NOT NULL",
            1
        )
        .await,
        1
    );
    h.drained().await;
    let sync = h
        .db
        .admin()
        .await
        .query_one(
            "SELECT chunk_count, chunks_received, members_received, members_left FROM member_syncs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            sync.get::<_, i32>(0),
            sync.get::<_, i32>(1),
            sync.get::<_, i64>(2),
            sync.get::<_, Option<i64>>(3)
        ),
        (3, 3, 2500, Some(1))
    );
    assert_eq!(
        h.count("SELECT count(*) FROM profiles WHERE left_at IS NULL")
            .await,
        2500
    );
    assert_eq!(
        h.count("SELECT count(*) FROM profiles WHERE discord_user_id = 5 AND left_at IS NOT NULL")
            .await,
        1,
        "a member in no chunk is marked as left"
    );
    let roles = |user: i64| {
        let db = &h.db;
        async move {
            db.admin()
                .await
                .query_one(
                    "SELECT role_ids FROM profiles WHERE discord_user_id = $1",
                    &[&user],
                )
                .await
                .unwrap()
                .get::<_, Vec<i64>>(0)
        }
    };
    assert_eq!(roles(1).await, [77], "the list's roles replace the join's");
    assert_eq!(roles(2).await, [99], "a later update wins over the list");
    assert_eq!(
        roles(3).await,
        Vec::<i64>::new(),
        "the list wins over an earlier update"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM communities WHERE members_synced_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'community.members_synced'")
            .await,
        1
    );
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_contradicts_itself_is_dead_lettered() {
    let mut h = Harness::new("worker_bad_chunk").await;
    h.start_worker();
    h.publish(&guild_join(334, "s1", 1)).await;
    h.publish(&chunk(334, 2, "sync-b", 3, 3, &[(1, Vec::new())]))
        .await;
    h.publish(&chunk(334, 3, &"n".repeat(33), 0, 1, &[(1, Vec::new())]))
        .await;
    let dead = tokio::time::timeout(common::WAIT, async {
        loop {
            let dead = h.dead_letters().await;
            if dead.len() >= 2 {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both chunks dead-lettered");
    assert!(
        dead.iter()
            .any(|(_, reason)| reason.contains("member chunk 3 of 3")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|(_, reason)| reason.contains("nonce of 33 bytes")),
        "{dead:?}"
    );
    assert_eq!(h.count("SELECT count(*) FROM profiles").await, 0);
    h.stop_worker().await;
}
