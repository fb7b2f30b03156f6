//! One guild's flood against the gateway's admission (see
//! `gateway::admission`): its member updates are paced and coalesced per
//! member, its slash commands past its limit shed, and neither buries
//! another guild's events in the stream nor reorders a member's.

mod common;

use std::collections::HashMap;

use common::*;
use discord_sim::{GuildsSpec, MemberPatch, NewInteraction, NewMember, SimControl, Simulator};
use gateway::{Gateway, Settings};
use testkit::http;
use testkit::nats::{read_stream, NatsServer, Stored};
use wire::{EventType, GuildId, Payload, UserId};

const MEMBERS: usize = 40;
const ROUNDS: usize = 25;

fn nick_round(stored: &Stored) -> Option<(UserId, usize)> {
    let Payload::MemberUpdate(update) = &stored.envelope.payload else {
        return None;
    };
    let round = update
        .nick
        .as_deref()?
        .strip_prefix("round ")?
        .parse()
        .ok()?;
    Some((stored.envelope.user_id?, round))
}

fn two_empty_guilds(control: &SimControl) -> Vec<GuildId> {
    control.create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 0,
        roles_per_guild: 1,
    })
}

/// A one-shard gateway with `limits` over the tests' settings, ready.
async fn ready_gateway(sim: &Simulator, nats: &NatsServer, limits: Settings) -> Gateway {
    let gateway = start(settings(sim, nats, "0", 1).overlay(limits), nats).await;
    until_ready(&gateway, "at start").await;
    gateway
}

/// A counter's value summed over its labels.
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guilds_flood_of_member_updates_does_not_bury_another_guilds_join() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = two_empty_guilds(control);
    let (flooding, quiet) = (guilds[0], guilds[1]);
    let members: Vec<UserId> = (0..MEMBERS)
        .map(|n| {
            control
                .add_member(
                    flooding,
                    NewMember {
                        username: Some(format!("member {n}")),
                        ..NewMember::default()
                    },
                )
                .expect("member added")
        })
        .collect();
    let gateway = ready_gateway(
        &sim,
        &nats,
        Settings {
            guild_member_updates_per_s: Some(20),
            guild_member_updates_burst: Some(10),
            ..Settings::default()
        },
    )
    .await;

    // A thousand updates to forty members, then a join elsewhere and one of
    // the flooded members leaving.
    for round in 0..ROUNDS {
        for &member in &members {
            control
                .update_member(
                    flooding,
                    member,
                    MemberPatch {
                        nick: Some(Some(format!("round {round}"))),
                        ..MemberPatch::default()
                    },
                )
                .expect("member updated");
        }
    }
    let joined = control
        .add_member(quiet, NewMember::default())
        .expect("member joined");
    let leaving = members[0];
    control
        .remove_member(flooding, leaving)
        .expect("member removed");

    // Every member's last state arrives, in time (the rate lets forty
    // through in two seconds).
    let nats_access = nats.access();
    testkit::eventually(
        "every flooded member's last update, the join and the leave in the stream",
        WAIT,
        || async {
            let stored = read_stream(&nats_access, "EVENTS").await;
            let last: usize = stored
                .iter()
                .filter_map(nick_round)
                .filter(|(_, round)| *round == ROUNDS - 1)
                .count();
            let left = stored
                .iter()
                .any(|s| s.envelope.event_type() == Some(EventType::MemberLeave));
            last == MEMBERS && left
        },
    )
    .await;
    let stored = read_stream(&nats_access, "EVENTS").await;

    let join_at = stored
        .iter()
        .position(|s| s.envelope.user_id == Some(joined))
        .expect("the quiet guild's join is in the stream");
    let updates_before = stored[..join_at]
        .iter()
        .filter(|s| nick_round(s).is_some())
        .count();
    assert!(
        updates_before < 200,
        "{updates_before} of the flood's {} updates were queued ahead of another guild's join",
        MEMBERS * ROUNDS
    );
    let updates: Vec<(UserId, usize)> = stored.iter().filter_map(nick_round).collect();
    assert!(
        updates.len() < MEMBERS * ROUNDS / 2,
        "{} updates published: the waiting ones were not coalesced",
        updates.len()
    );

    // A member's updates keep their order, and their leave follows them.
    let mut last_round: HashMap<UserId, usize> = HashMap::new();
    for (member, round) in &updates {
        let before = last_round.insert(*member, *round);
        assert!(
            before.is_none_or(|b| b < *round),
            "member {member}'s round {round} came after round {before:?}"
        );
    }
    let leave_at = stored
        .iter()
        .position(|s| s.envelope.event_type() == Some(EventType::MemberLeave))
        .expect("the leave");
    assert!(
        stored[leave_at + 1..]
            .iter()
            .all(|s| nick_round(s).is_none_or(|(member, _)| member != leaving)),
        "an update of the member who left came after their leave"
    );
    let ids: std::collections::HashSet<_> = stored.iter().map(|s| &s.envelope.id).collect();
    assert_eq!(
        ids.len(),
        stored.len(),
        "an envelope is in the stream twice"
    );

    let (_, metrics) = http::get(gateway.http_addr(), "/metrics").await;
    let replaced = total(&metrics, "gateway_member_updates_replaced_total");
    assert!(
        replaced as usize + updates.len() == MEMBERS * ROUNDS,
        "published {} + replaced {replaced} should account for all {} updates",
        updates.len(),
        MEMBERS * ROUNDS
    );

    let summary = gateway.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.publish.abandoned, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guilds_slash_commands_past_its_limit_are_shed_and_counted() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = two_empty_guilds(control);
    let user = control
        .add_member(guilds[0], NewMember::default())
        .expect("member added");
    let other = control
        .add_member(guilds[1], NewMember::default())
        .expect("member added");
    let gateway = ready_gateway(
        &sim,
        &nats,
        Settings {
            guild_interactions_per_s: Some(1),
            guild_interactions_burst: Some(5),
            ..Settings::default()
        },
    )
    .await;

    let command = |guild_id, user_id| NewInteraction {
        guild_id,
        user_id,
        command_name: "profile".into(),
        options: Vec::new(),
        locale: None,
    };
    for _ in 0..40 {
        control
            .create_interaction(command(guilds[0], user))
            .expect("interaction created");
    }
    let answered_elsewhere = control
        .create_interaction(command(guilds[1], other))
        .expect("interaction created");

    let nats_access = nats.access();
    testkit::eventually("the other guild's command in the stream", WAIT, || async {
        let stored = read_stream(&nats_access, "COMMANDS").await;
        stored.iter().any(|s| {
            matches!(&s.envelope.payload, Payload::InteractionCreate(i) if i.interaction_id == answered_elsewhere.id)
        })
    })
    .await;
    let stored = read_stream(&nats_access, "COMMANDS").await;
    let flooding = stored
        .iter()
        .filter(|s| s.envelope.guild_id == Some(guilds[0]))
        .count();
    // The burst, and what the rate added while the forty arrived.
    assert!(
        (5..=10).contains(&flooding),
        "{flooding} of the flooding guild's 40 commands were published"
    );
    let (_, metrics) = http::get(gateway.http_addr(), "/metrics").await;
    let shed = total(&metrics, "gateway_interactions_shed_total");
    assert_eq!(shed as usize, 40 - flooding, "{metrics}");

    let summary = gateway.shutdown().await.expect("clean shutdown");
    assert_eq!(summary.publish.abandoned, 0);
    sim.shutdown().await;
}
