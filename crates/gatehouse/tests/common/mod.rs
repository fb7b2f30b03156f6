//! What the whole-pipeline fault tests share (`nats_cluster.rs`,
//! `database_restarts.rs`): a real gateway against the simulator, and the
//! check that every event reached JetStream once and the database exactly
//! once in effect, its members the simulator's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use bus::{Namespace, Process, Topology};
use testkit::nats::NatsAccess;
use testkit::sim::assert_exactly_once;
use testkit::TestDb;
use wire::EventType;

/// How long the worker may take to apply what JetStream holds after a
/// fault (retries wait out their backoff).
const SETTLE: Duration = Duration::from_secs(60);

/// The gateway on shards `0..shards` of the simulator, publishing through
/// `nats` (every URL it lists: it moves to a live server when its own dies).
pub async fn start_gateway(
    sim: &discord_sim::Simulator,
    nats: &NatsAccess,
    topology: &Topology,
    token: &str,
    shards: u32,
) -> gateway::Gateway {
    let settings = gateway::Settings {
        discord_token: Some(gateway::Token::new(token)),
        shards: Some(format!("0-{}", shards - 1)),
        total_shards: Some(shards.to_string()),
        discord_gateway_url: Some(sim.gateway_url()),
        discord_api_url: Some(sim.api_url()),
        identify_queue: Some("unlimited".into()),
        nats_url: Some(nats.url().to_owned().into()),
        http_addr: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let mut config = gateway::GatewayConfig::from_settings(settings).expect("a valid config");
    config.topology = topology.clone();
    config.nats = nats.settings(Process::Gateway);
    gateway::Gateway::start(config)
        .await
        .expect("the gateway starts")
}

/// Each guild's profiles against the simulator's members: the present ones
/// with their roles, and every other profile marked as left.
pub async fn assert_members_match(
    db: &TestDb,
    sim: &discord_sim::Simulator,
    guilds: &[wire::GuildId],
) {
    type Members = BTreeMap<(i64, i64), Vec<i64>>;
    let mut in_discord = Members::new();
    for &guild in guilds {
        for member in sim.control().members(guild).expect("the guild's members") {
            let mut roles: Vec<i64> = member.roles.iter().map(|r| r.get() as i64).collect();
            roles.sort_unstable();
            in_discord.insert((guild.get() as i64, member.user_id.get() as i64), roles);
        }
    }
    let rows = db
        .admin()
        .await
        .query(
            "SELECT c.discord_guild_id, p.discord_user_id, p.role_ids, p.left_at IS NULL
               FROM profiles p JOIN communities c ON c.id = p.community_id",
            &[],
        )
        .await
        .expect("reading the profiles");
    let mut present = Members::new();
    let mut left = 0;
    for row in rows {
        if row.get::<_, bool>(3) {
            let mut roles: Vec<i64> = row.get(2);
            roles.sort_unstable();
            present.insert((row.get(0), row.get(1)), roles);
        } else {
            left += 1;
            let key = (row.get(0), row.get(1));
            assert!(
                !in_discord.contains_key(&key),
                "{key:?} is a member but its profile says it left"
            );
        }
    }
    assert!(left > 0, "the traffic had leaves; no profile says so");
    let missing: Vec<_> = in_discord
        .keys()
        .filter(|k| !present.contains_key(k))
        .collect();
    let extra: Vec<_> = present
        .keys()
        .filter(|k| !in_discord.contains_key(k))
        .collect();
    let wrong_roles: Vec<_> = in_discord
        .iter()
        .filter(|(k, roles)| present.get(k).is_some_and(|r| r != *roles))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong_roles.is_empty(),
        "profiles differ from the simulator's members: {} missing {missing:?}, {} extra {extra:?}, {} with other roles {wrong_roles:?}",
        missing.len(),
        extra.len(),
        wrong_roles.len()
    );
}

/// After a run of `member_events` member events into `guilds` (which
/// started empty) on shards `0..shards`: (a) JetStream holds every event the
/// simulator sent, once; (b) the worker applied each exactly once in effect
/// — its id claimed once, in the transaction of the effect, no effect
/// audited twice, none dead-lettered — and the members are the simulator's.
pub async fn assert_applied_exactly_once(
    db: &TestDb,
    sim: &discord_sim::Simulator,
    nats: &NatsAccess,
    namespace: &Namespace,
    shards: u32,
    member_events: u64,
    guilds: &[wire::GuildId],
) {
    // (a) JetStream holds every event the simulator sent, once.
    let stored = assert_exactly_once(sim, nats, "EVENTS", 0..shards, "").await;
    let kinds: HashSet<_> = stored.iter().map(|s| s.envelope.event_type()).collect();
    // Each of these is claimed in `processed_events` in the transaction of
    // its effect; another kind would need a check of its own.
    let claimed = [
        EventType::GuildJoin,
        EventType::MemberJoin,
        EventType::MemberUpdate,
        EventType::MemberLeave,
        EventType::MembersChunk,
    ];
    assert!(
        kinds
            .iter()
            .all(|k| k.is_some_and(|k| claimed.contains(&k))),
        "unexpected kinds of event: {kinds:?}"
    );
    let stored_member_events = stored
        .iter()
        .filter(|s| {
            matches!(
                s.envelope.event_type(),
                Some(EventType::MemberJoin | EventType::MemberUpdate | EventType::MemberLeave)
            )
        })
        .count();
    // The guilds started empty: every member event is one of the traffic's.
    assert_eq!(
        stored_member_events as u64, member_events,
        "member events stored"
    );

    // (b) The worker applied each exactly once in effect: its id claimed
    // once, in the transaction of the effect ...
    db.wait_for_count(
        "SELECT count(*) FROM processed_events",
        stored.len() as i64,
        SETTLE,
    )
    .await;
    testkit::drained(&nats.jetstream(Process::Admin).await, namespace, SETTLE).await;
    let processed: Vec<String> = db
        .column("SELECT event_id FROM processed_events ORDER BY event_id")
        .await;
    let unique: BTreeSet<&String> = processed.iter().collect();
    assert_eq!(unique.len(), processed.len(), "an id processed twice");
    let expected: BTreeSet<String> = stored.iter().map(|s| s.envelope.id.to_string()).collect();
    let missing: Vec<_> = expected.iter().filter(|id| !unique.contains(id)).collect();
    let extra: Vec<_> = unique
        .iter()
        .filter(|id| !expected.contains(**id))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "processed_events differs from EVENTS: {} missing {missing:?}; {} unexpected {extra:?}; dead letters: {:#?}",
        missing.len(),
        extra.len(),
        dead_letters(nats).await
    );
    // ... no effect recorded twice ...
    let audited_twice = db
        .count(
            "SELECT count(*) FROM (SELECT metadata ->> 'event_id' FROM audit_logs
              WHERE metadata ? 'event_id' GROUP BY 1 HAVING count(*) > 1) twice",
        )
        .await;
    assert_eq!(audited_twice, 0, "an event was audited twice");
    // ... none given up on ...
    let dead = dead_letters(nats).await;
    assert!(dead.is_empty(), "{} dead letters: {dead:#?}", dead.len());
    // ... and the members are what Discord says they are.
    assert_members_match(db, sim, guilds).await;
}

/// Each dead letter's event id and the reason the worker gave up on it.
async fn dead_letters(nats: &NatsAccess) -> Vec<(String, String)> {
    let js = nats.jetstream(Process::Admin).await;
    let mut stream = js
        .get_stream("DEAD_LETTER")
        .await
        .expect("the DEAD_LETTER stream");
    let state = stream
        .info()
        .await
        .expect("DEAD_LETTER's info")
        .state
        .clone();
    let mut found = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map_or_else(String::new, |v| v.as_str().to_owned())
        };
        found.push((
            header(wire::subjects::headers::MSG_ID),
            header(wire::subjects::headers::DEAD_LETTER_REASON),
        ));
    }
    found
}
