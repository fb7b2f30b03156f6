//! What the whole-pipeline fault tests share (`nats_cluster.rs`,
//! `database_restarts.rs`): a real gateway against the simulator, and the
//! check that the database's members are the simulator's.

use std::collections::BTreeMap;

use bus::{Process, Topology};
use testkit::nats::NatsAccess;
use testkit::TestDb;

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
