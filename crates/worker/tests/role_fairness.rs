//! Role changes under pressure, against the simulator's REST limits: one
//! guild's spent window delays only that guild, several worker processes
//! together stay within Discord's global limit, and a run of invalid
//! requests stops every process before Discord would ban the bot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use discord_sim::{GuildsSpec, RestLimits, SimConfig, Simulator};
use testkit::nats::NatsScope;
use wire::check::CheckPriority;
use wire::{GuildId, RoleId, UserId};
use worker::discord::{Discord, DiscordError, RoleChange, RoleChangeLimits, Sharing};

/// Only turns a hang into a failure; every assertion is about order or counts.
const WAIT: Duration = Duration::from_secs(20);

async fn simulator(rest: RestLimits) -> Simulator {
    Simulator::start(SimConfig {
        token: "test-token".into(),
        rest,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// `count` guilds of `members` members, each with one assignable role.
fn guilds(sim: &Simulator, count: usize, members: usize) -> Vec<(GuildId, RoleId, Vec<UserId>)> {
    sim.control()
        .create_guilds(&GuildsSpec {
            count,
            members_per_guild: members,
            roles_per_guild: 1,
        })
        .into_iter()
        .map(|guild| {
            // role_ids[0] is @everyone.
            let role = sim.control().guild(guild).unwrap().role_ids[1];
            (guild, role, testkit::sim::member_ids(sim, guild))
        })
        .collect()
}

/// A client as one worker process has it, sharing the budget through
/// `nats`'s namespace.
fn worker_client(sim: &Simulator, limits: RoleChangeLimits, nats: &NatsScope) -> Discord {
    let sharing = Sharing::Nats {
        jetstream: nats.js.clone(),
        topology: bus::Topology::new(nats.ns.clone()).with_storage(bus::Storage::Memory),
    };
    Discord::new("test-token", Some(&sim.api_url()), limits, sharing).unwrap()
}

async fn nats() -> NatsScope {
    NatsScope::new(&testkit::db::StackEnv::load().nats).await
}

fn in_flight(n: usize) -> RoleChangeLimits {
    RoleChangeLimits {
        in_flight: n,
        ..RoleChangeLimits::default()
    }
}

fn grant(guild: GuildId, role: RoleId, user: UserId) -> RoleChange {
    RoleChange {
        guild_id: guild,
        user_id: user,
        role_id: role,
        add: true,
        reason: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guild_waiting_for_its_window_does_not_delay_another_guilds_change() {
    // Two changes per guild a minute: the big guild's window is spent after
    // two, and stays spent for the rest of the test.
    let sim = simulator(RestLimits {
        route_limit: 2,
        route_window_ms: 60_000,
        ..RestLimits::default()
    })
    .await;
    let world = guilds(&sim, 2, 10);
    let (big, big_role, big_members) = world[0].clone();
    let (other, other_role, other_members) = world[1].clone();
    let nats = nats().await;
    let discord = worker_client(&sim, in_flight(2), &nats);

    let big_done = Arc::new(AtomicUsize::new(0));
    let mut queued = Vec::new();
    for user in &big_members {
        let (discord, done) = (discord.clone(), big_done.clone());
        let change = grant(big, big_role, *user);
        queued.push(tokio::spawn(async move {
            discord
                .change_role(change, CheckPriority::Bulk)
                .await
                .unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    testkit::eventually("the big guild's window to be spent", WAIT, || {
        let done = big_done.load(Ordering::SeqCst);
        async move { done == 2 }
    })
    .await;

    // Bulk, like the big guild's: the other guild is not let through by
    // priority but because it may send and the big one may not.
    let change = grant(other, other_role, other_members[0]);
    let result = tokio::time::timeout(WAIT, discord.change_role(change, CheckPriority::Bulk)).await;
    let big_done_then = big_done.load(Ordering::SeqCst);
    assert!(
        matches!(result, Ok(Ok(()))),
        "the other guild's change waited behind the spent guild: {result:?}"
    );
    assert_eq!(
        big_done_then, 2,
        "the other guild's change finished only after the big guild's window reset"
    );
    assert!(sim
        .control()
        .member(other, other_members[0])
        .unwrap()
        .roles
        .contains(&other_role));
    assert_eq!(sim.control().stats().rest_rate_limited, 0);
    for task in queued {
        task.abort();
    }
    sim.shutdown().await;
}

/// Drives `per_client` changes through each client at once, spread over
/// every guild, and returns how many failed.
async fn drive(
    clients: &[Discord],
    world: &[(GuildId, RoleId, Vec<UserId>)],
    per_client: usize,
) -> usize {
    let changes: Vec<RoleChange> = world
        .iter()
        .flat_map(|(guild, role, members)| members.iter().map(|user| grant(*guild, *role, *user)))
        .collect();
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        for change in changes
            .iter()
            .skip(n)
            .step_by(clients.len())
            .take(per_client)
        {
            let (client, change) = (client.clone(), change.clone());
            tasks.push(tokio::spawn(async move {
                client.change_role(change, CheckPriority::Bulk).await
            }));
        }
    }
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_together_stay_within_discords_global_limit() {
    // Only the global limit applies (no route buckets): 50 requests a second
    // for the bot, however many processes send them.
    let limits = RestLimits {
        global_per_second: 50,
        route_limit: 0,
        ..RestLimits::default()
    };
    let sim = simulator(limits.clone()).await;
    let world = guilds(&sim, 20, 10);
    let nats = nats().await;
    let workers = [
        worker_client(&sim, in_flight(8), &nats),
        worker_client(&sim, in_flight(8), &nats),
    ];
    let failed = drive(&workers, &world, 100).await;
    let stats = sim.control().stats();
    assert_eq!(
        stats.rest_global_rate_limited, 0,
        "two workers together exceeded Discord's global limit ({failed} changes failed)"
    );
    assert_eq!(failed, 0);
    assert_eq!(stats.role_requests, 200, "each change sent once");
    sim.shutdown().await;

    // The same load through two budgets that do not share: each keeps
    // within the limit on its own, and together they exceed it.
    let sim = simulator(limits).await;
    let world = guilds(&sim, 20, 10);
    let alone = || {
        Discord::new(
            "test-token",
            Some(&sim.api_url()),
            in_flight(8),
            Sharing::Alone,
        )
        .unwrap()
    };
    drive(&[alone(), alone()], &world, 100).await;
    assert!(
        sim.control().stats().rest_global_rate_limited > 0,
        "the load is too light to show anything: two separate budgets stayed within the limit"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_stop_every_worker_until_the_window_passes() {
    const WINDOW: Duration = Duration::from_secs(3);
    let sim = simulator(RestLimits::default()).await;
    let world = guilds(&sim, 2, 6);
    let (forbidden, forbidden_role, forbidden_members) = world[0].clone();
    let (fine, fine_role, fine_members) = world[1].clone();
    // The bot lost Manage Roles in one guild: every change there is a 403.
    sim.control().forbid_role_changes(forbidden, true);
    let limits = RoleChangeLimits {
        invalid_limit: 5,
        invalid_window: WINDOW,
        ..in_flight(2)
    };
    let nats = nats().await;
    let one = worker_client(&sim, limits.clone(), &nats);
    let other = worker_client(&sim, limits, &nats);

    // No invalid request can be older than this.
    let started = tokio::time::Instant::now();
    for user in &forbidden_members[..5] {
        let result = one
            .change_role(grant(forbidden, forbidden_role, *user), CheckPriority::Bulk)
            .await;
        assert!(
            matches!(result, Err(DiscordError::Request { .. })),
            "a forbidden change: {result:?}"
        );
    }
    let sent = sim.control().stats().role_requests;
    assert_eq!(sent, 5);
    // The breaker is open: the other worker sends nothing either, and says
    // so with an error its caller retries later.
    let change = grant(fine, fine_role, fine_members[0]);
    let refused = other
        .change_role(change.clone(), CheckPriority::Interactive)
        .await;
    assert!(
        matches!(refused, Err(DiscordError::BreakerOpen { .. })),
        "a role change went out after the invalid-request limit was reached: {refused:?}"
    );
    assert!(other.breaker_open_for().is_some());
    assert_eq!(sim.control().stats().role_requests, sent);

    // Once the invalid requests are older than the window, changes go out.
    testkit::eventually("the breaker to close", WAIT, || {
        let (other, change) = (other.clone(), change.clone());
        async move {
            other
                .change_role(change, CheckPriority::Interactive)
                .await
                .is_ok()
        }
    })
    .await;
    // (Less a little: the breaker keeps time by the wall clock.)
    assert!(
        started.elapsed() >= WINDOW - Duration::from_millis(100),
        "closed {:?} after the first invalid request, before the window had passed",
        started.elapsed()
    );
    assert_eq!(sim.control().stats().role_requests, sent + 1);
    assert!(sim
        .control()
        .member(fine, fine_members[0])
        .unwrap()
        .roles
        .contains(&fine_role));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_nats_keeps_changing_roles_within_a_cautious_share() {
    // The worker is told Discord allows 50 a second; cut off, it allows
    // itself half (the only process it saw): this simulator takes no more.
    let sim = simulator(RestLimits {
        global_per_second: 25,
        route_limit: 0,
        ..RestLimits::default()
    })
    .await;
    let world = guilds(&sim, 6, 10);
    // A NATS of the test's own, to stop.
    let mut server = testkit::nats::NatsServer::start();
    let sharing = Sharing::Nats {
        jetstream: server.access().jetstream(bus::Process::Worker).await,
        topology: bus::Topology::new(bus::Namespace::root()).with_storage(bus::Storage::Memory),
    };
    let discord = Discord::new("test-token", Some(&sim.api_url()), in_flight(8), sharing).unwrap();
    let (guild, role, members) = &world[0];
    discord
        .change_role(grant(*guild, *role, members[0]), CheckPriority::Bulk)
        .await
        .unwrap();

    server.stop();
    // The first change again, and the 59 after it: more than the
    // simulator takes in a second at the full rate.
    let failed = drive(std::slice::from_ref(&discord), &world, 60).await;
    assert_eq!(failed, 0, "role changes stopped with NATS");
    let stats = sim.control().stats();
    assert_eq!(stats.rest_rate_limited, 0);
    assert_eq!(stats.role_requests, 61);
    sim.shutdown().await;
}
