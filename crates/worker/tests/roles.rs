//! Eligibility → roles: the worker evaluates rules against a fake chain and
//! syncs roles through the simulator's REST API.

mod common;

use std::time::Duration;

use common::{guild_join, member_join_with_roles, Harness};
use discord_sim::{GuildsSpec, SimConfig, Simulator};
use domain::role_sync::RoleSyncConfig;
use eligibility::{
    fake_chain::{FakeChain, FakeContract, Fault},
    Address, U256,
};
use store::WalletAddress;
use wire::{GuildId, RoleId, UserId};

const CONTRACT: &str = "0x00000000000000000000000000000000000c0de1";

fn wallet(n: u8) -> String {
    format!("0x{}", format!("{n:02x}").repeat(20))
}

fn roles_of(sim: &Simulator, guild: GuildId, user: UserId) -> Vec<RoleId> {
    sim.control().member(guild, user).unwrap().roles
}

/// Polls the simulator until `user` holds (or lacks) `role`.
async fn wait_for_role(
    sim: &Simulator,
    guild: GuildId,
    user: UserId,
    role: RoleId,
    held: bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if roles_of(sim, guild, user).contains(&role) == held {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks `user` until they hold `role`. A member's first check can find
/// their join's own check still holding them; the worker then leaves them to
/// the periodic scan, which these tests push an hour away, so ask again.
async fn check_until_granted(
    h: &Harness,
    sim: &Simulator,
    guild: GuildId,
    user: UserId,
    role: RoleId,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for attempt in 1000.. {
        check_now(h, guild, user, attempt).await;
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < settle {
            if roles_of(sim, guild, user).contains(&role) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "user {user} was never granted role {role}"
        );
    }
}

async fn check_now(h: &Harness, guild: GuildId, user: UserId, n: u32) {
    let check = wire::check::EligibilityCheck {
        id: format!("test-check-{guild}-{user}-{n}"),
        guild_id: guild,
        user_id: Some(user),
        more_user_ids: vec![],
        reason: "test".into(),
        priority: wire::check::CheckPriority::Interactive,
        requested_at: 0,
    };
    h.nats
        .js
        .publish(
            h.nats.ns.subject(wire::subjects::ELIGIBILITY_CHECK),
            check.to_json().unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_get_the_role_a_drop_removes_it_and_an_outage_removes_nothing() {
    let sim = Simulator::start(SimConfig {
        token: "test-token".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ids = sim.control().create_guilds(&GuildsSpec {
        count: 2,
        members_per_guild: 4,
        roles_per_guild: 2,
    });
    let (ga, gb) = (ids[0], ids[1]);
    let info_a = sim.control().guild(ga).unwrap();
    let info_b = sim.control().guild(gb).unwrap();
    // role_ids[0] is @everyone (the guild's own id), which cannot be granted.
    let (gated_a, unmanaged_a) = (info_a.role_ids[1], info_a.role_ids[2]);
    let gated_b = info_b.role_ids[1];
    let members_a = testkit::sim::member_ids(&sim, ga);
    let members_b = testkit::sim::member_ids(&sim, gb);

    let chain = FakeChain::start().await.unwrap();
    let contract: Address = CONTRACT.parse().unwrap();
    chain.deploy(contract, FakeContract::Erc20);

    let mut h = Harness::new("worker_roles").await;
    h.enable_role_sync(
        &sim.api_url(),
        chain.url(),
        RoleSyncConfig {
            grace: Duration::ZERO,
            recheck_period: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(3600),
            scan_batch: 100,
            // Balances change and the next check must see them.
            check_min_read_age: Duration::ZERO,
        },
    );
    h.start_worker();
    h.publish(&guild_join(ga, "s", 1)).await;
    h.publish(&guild_join(gb, "s", 2)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 2)
            .await,
        2
    );

    // Both communities gate a role on the same contract, at different
    // thresholds: 10 in A, 1000 in B.
    h.gate_role(ga, CONTRACT, gated_a, "10").await;
    h.gate_role(gb, CONTRACT, gated_b, "1000").await;
    // Balances: A's members 0,1,3 hold 100; member 2 holds 5. B's member 0 holds 100.
    let balances = [100u64, 100, 5, 100];
    for (i, balance) in balances.iter().enumerate() {
        chain.set_erc20_balance(
            contract,
            wallet(i as u8 + 1).parse().unwrap(),
            U256::from(*balance),
        );
    }
    chain.set_erc20_balance(contract, wallet(50).parse().unwrap(), U256::from(100u64));

    // Members join (member 2 already holds a role no rule manages).
    sim.control()
        .update_member(
            ga,
            members_a[2],
            discord_sim::MemberPatch {
                roles: Some(vec![unmanaged_a]),
                ..Default::default()
            },
        )
        .unwrap();
    for (i, user) in members_a.iter().enumerate() {
        let roles = if i == 2 { vec![unmanaged_a] } else { vec![] };
        h.publish(&member_join_with_roles(
            ga,
            *user,
            "s",
            10 + i as u64,
            roles,
        ))
        .await;
    }
    h.publish(&member_join_with_roles(gb, members_b[0], "s", 20, vec![]))
        .await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", 5).await,
        5
    );
    // Link wallets (member 1 of A links none).
    for (guild, user, w) in [
        (ga, members_a[0], wallet(1)),
        (ga, members_a[2], wallet(3)),
        (ga, members_a[3], wallet(4)),
        (gb, members_b[0], wallet(50)),
    ] {
        let tenant = testkit::fixtures::tenant_of(&h.store, guild).await;
        testkit::fixtures::link_wallet(&h.store, tenant, user, &w).await;
    }
    for (n, user) in members_a.iter().enumerate() {
        check_now(&h, ga, *user, n as u32).await;
    }
    check_now(&h, gb, members_b[0], 0).await;

    for user in [members_a[0], members_a[3]] {
        if !wait_for_role(&sim, ga, user, gated_a, true).await {
            let admin = h.db.admin().await;
            let grants: Option<String> = admin
                .query_one("SELECT string_agg(coalesce(eligible::text, '?') || ' ' || detail, '; ') FROM role_grants", &[])
                .await
                .unwrap()
                .get(0);
            panic!(
                "holder {user} without role; grants: {grants:?}; dead letters: {:?}",
                h.dead_letters().await
            );
        }
    }
    // Meets A's threshold but not B's: independent results per community.
    h.drained().await;
    assert!(
        !roles_of(&sim, gb, members_b[0]).contains(&gated_b),
        "B granted below its threshold"
    );
    assert!(
        !roles_of(&sim, ga, members_a[1]).contains(&gated_a),
        "no wallet, yet a role"
    );
    let m2 = roles_of(&sim, ga, members_a[2]);
    assert!(!m2.contains(&gated_a), "balance 5 < 10, yet a role");
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'role.granted'")
            .await,
        2
    );

    // An RPC outage: nobody loses anything.
    chain.set_fault(Fault::Unavailable);
    chain.set_erc20_balance(contract, wallet(1).parse().unwrap(), U256::ZERO);
    check_now(&h, ga, members_a[0], 100).await;
    h.drained().await;
    assert!(
        roles_of(&sim, ga, members_a[0]).contains(&gated_a),
        "an outage removed a role"
    );

    // Provider back, balance dropped: the role goes (grace period 0).
    chain.set_fault(Fault::None);
    check_now(&h, ga, members_a[0], 101).await;
    assert!(
        wait_for_role(&sim, ga, members_a[0], gated_a, false).await,
        "balance drop kept the role"
    );
    // The role no rule manages was never touched.
    assert!(m2.contains(&unmanaged_a));
    assert!(roles_of(&sim, ga, members_a[2]).contains(&unmanaged_a));
    // The removal is audited with the check's decisions, in the write that
    // follows Discord's answer: awaited, not read at the moment the role
    // left the simulator.
    assert_eq!(
        h.wait_for_count(
            "SELECT count(*) FROM audit_logs WHERE action = 'role.removed'",
            1
        )
        .await,
        1
    );
    h.drained().await;
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'role.removed'")
            .await,
        1,
        "a removal was audited twice"
    );
    h.stop_worker().await;
    sim.shutdown().await;
}

/// A token-gated guild (see `common::GatedGuild`) whose members have each
/// linked a wallet: member `i` holds `wallet(i + 1)`.
async fn gated_world(label: &str, members: usize, grace: Duration) -> common::GatedGuild {
    let g = common::GatedGuild::start(label, CONTRACT, members, grace).await;
    let tx = g.h.store.begin(g.tenant).await.unwrap();
    for (i, user) in g.members.iter().enumerate() {
        tx.profiles()
            .link_wallet(*user, &WalletAddress::parse(&wallet(i as u8 + 1)).unwrap())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    g
}

fn set_balance(chain: &FakeChain, member: usize, balance: u64) {
    chain.set_erc20_balance(
        CONTRACT.parse().unwrap(),
        wallet(member as u8 + 1).parse().unwrap(),
        U256::from(balance),
    );
}

/// Requests a check of `user` and waits until the worker has recorded it.
async fn checked(h: &Harness, guild: GuildId, user: UserId, n: u32) {
    // checked_at is the database's clock: compare with a moment taken first.
    let before: chrono::DateTime<chrono::Utc> =
        h.db.admin()
            .await
            .query_one("SELECT now()", &[])
            .await
            .unwrap()
            .get(0);
    check_now(h, guild, user, n).await;
    let admin = h.db.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let done: bool = admin
            .query_one(
                "SELECT coalesce(bool_or(g.checked_at > $2), false) FROM role_grants g
                 JOIN profiles p ON p.community_id = g.community_id AND p.id = g.profile_id
                 WHERE p.discord_user_id = $1",
                &[&(user.get() as i64), &before],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "check of {user} never recorded"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_removed_only_after_failing_for_the_whole_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let common::GatedGuild {
        sim,
        chain,
        mut h,
        guild,
        gated,
        members: users,
        ..
    } = gated_world("worker_grace", 2, GRACE).await;
    let (steady, flapping) = (users[0], users[1]);
    set_balance(&chain, 0, 100);
    set_balance(&chain, 1, 100);
    for user in &users {
        check_until_granted(&h, &sim, guild, *user, gated).await;
    }

    // Both drop below the rule. Within the grace period, both keep the role.
    set_balance(&chain, 0, 0);
    set_balance(&chain, 1, 0);
    checked(&h, guild, steady, 10).await;
    checked(&h, guild, flapping, 11).await;
    assert!(roles_of(&sim, guild, steady).contains(&gated));
    assert!(roles_of(&sim, guild, flapping).contains(&gated));

    // One recovers before the grace period ends: the clock resets.
    set_balance(&chain, 1, 100);
    checked(&h, guild, flapping, 12).await;
    tokio::time::sleep(GRACE).await;
    set_balance(&chain, 1, 0);
    checked(&h, guild, flapping, 13).await;
    checked(&h, guild, steady, 14).await;
    // The steady one failed for the whole period: removed. The flapping one
    // has only just started failing again: kept.
    assert!(wait_for_role(&sim, guild, steady, gated, false).await);
    assert!(
        roles_of(&sim, guild, flapping).contains(&gated),
        "a dip that recovered within the grace period stripped the role"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'role.removed'")
            .await,
        1
    );
    h.stop_worker().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wallet_gets_no_grace_for_what_the_old_one_earned() {
    // A long grace period: only the wallet change can explain a removal.
    let common::GatedGuild {
        sim,
        chain,
        mut h,
        guild,
        tenant,
        gated,
        members: users,
        ..
    } = gated_world("worker_wallet_grace", 2, Duration::from_secs(3600)).await;
    let (switcher, keeper) = (users[0], users[1]);
    set_balance(&chain, 0, 100);
    set_balance(&chain, 1, 100);
    for user in &users {
        check_until_granted(&h, &sim, guild, *user, gated).await;
    }

    // One member moves to an empty wallet (members hold several wallets,
    // so a move is the old one unlinked and the new one linked); the
    // other's balance drops.
    let tx = h.store.begin(tenant).await.unwrap();
    let profile = tx
        .profiles()
        .find_by_discord_user(switcher)
        .await
        .unwrap()
        .unwrap();
    assert!(tx
        .member_wallets()
        .unlink(profile.id, &WalletAddress::parse(&wallet(1)).unwrap())
        .await
        .unwrap());
    tx.profiles()
        .link_wallet(switcher, &WalletAddress::parse(&wallet(9)).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    set_balance(&chain, 1, 0);
    checked(&h, guild, switcher, 10).await;
    checked(&h, guild, keeper, 11).await;

    assert!(
        wait_for_role(&sim, guild, switcher, gated, false).await,
        "the old wallet's standing outlived the wallet change"
    );
    assert!(
        roles_of(&sim, guild, keeper).contains(&gated),
        "a balance dip with the same wallet must still get its grace period"
    );
    h.stop_worker().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_refused_by_the_breaker_comes_back_after_it_instead_of_being_dropped() {
    // One invalid request opens the breaker, for 2 s.
    let g = common::GatedGuild::start_pacing_roles(
        "worker_breaker",
        CONTRACT,
        1,
        common::GuildOptions::default(),
        worker::discord::RoleChangeLimits {
            invalid_limit: 1,
            invalid_window: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    let user = g.members[0];
    let tx = g.h.store.begin(g.tenant).await.unwrap();
    tx.profiles()
        .link_wallet(user, &WalletAddress::parse(&wallet(1)).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    set_balance(&g.chain, 0, 100);
    // The join's own check is over: this one is not turned away as busy.
    g.h.drained().await;

    // The bot has lost Manage Roles: the change is refused, the breaker
    // opens, and the check cannot be done until it closes.
    g.sim.control().forbid_role_changes(g.guild, true);
    check_now(&g.h, g.guild, user, 1).await;
    testkit::eventually("Discord to refuse the change", common::WAIT, || {
        let refused = g.sim.control().stats().role_requests > 0;
        async move { refused }
    })
    .await;
    g.sim.control().forbid_role_changes(g.guild, false);

    // Back once the breaker has closed, not dead-lettered meanwhile (this
    // harness gives up on a failing message after 3 quick attempts).
    assert!(
        wait_for_role(&g.sim, g.guild, user, g.gated, true).await,
        "the check was lost; dead letters: {:?}",
        g.h.dead_letters().await
    );
    assert!(g.h.dead_letters().await.is_empty());
    g.sim.shutdown().await;
}

/// A Discord client with `in_flight` role changes at once and a budget of
/// its own.
fn alone(sim: &Simulator, in_flight: usize) -> worker::discord::Discord {
    let limits = worker::discord::RoleChangeLimits {
        in_flight,
        ..Default::default()
    };
    let sharing = worker::discord::Sharing::Alone;
    worker::discord::Discord::new("test-token", Some(&sim.api_url()), limits, sharing).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_own_role_change_overtakes_queued_bulk_ones() {
    // Discord allows a few role changes per guild per window; a bulk
    // re-check of many members must not make an interactive one wait for
    // all of them.
    let sim = Simulator::start(SimConfig {
        token: "test-token".into(),
        rest: discord_sim::RestLimits {
            route_limit: 4,
            route_window_ms: 1_000,
            ..Default::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let guild = sim.control().create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 13,
        roles_per_guild: 1,
    })[0];
    let role = sim.control().guild(guild).unwrap().role_ids[1];
    let users = testkit::sim::member_ids(&sim, guild);
    let discord = alone(&sim, 1);
    let finished = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let change = |user: UserId| worker::discord::RoleChange {
        guild_id: guild,
        user_id: user,
        role_id: role,
        add: true,
        reason: "test".into(),
    };
    let mut tasks = Vec::new();
    for user in &users[..12] {
        let (discord, finished, change) = (discord.clone(), finished.clone(), change(*user));
        tasks.push(tokio::spawn(async move {
            discord
                .change_role(change, wire::check::CheckPriority::Bulk)
                .await
                .unwrap();
            finished.lock().unwrap().push("bulk");
        }));
    }
    // Once the bulk work has queued up and started, a member runs /check.
    testkit::eventually(
        "the bulk changes to queue up and start",
        common::WAIT,
        || {
            let queued = discord.backlog() + finished.lock().unwrap().len() == 12;
            let started = sim.control().stats().role_requests > 0;
            async move { queued && started }
        },
    )
    .await;
    let member = {
        let (discord, finished, change) = (discord.clone(), finished.clone(), change(users[12]));
        tokio::spawn(async move {
            discord
                .change_role(change, wire::check::CheckPriority::Interactive)
                .await
                .unwrap();
            finished.lock().unwrap().push("interactive");
        })
    };
    // Counted from the moment the member's change is queued: however long
    // this test is kept from running, only what finished by then is behind
    // it.
    testkit::eventually("the member's change to be queued", common::WAIT, || {
        let queued = discord.backlog() + finished.lock().unwrap().len() == 13;
        async move { queued }
    })
    .await;
    let bulk_done_before = finished
        .lock()
        .unwrap()
        .iter()
        .filter(|o| **o == "bulk")
        .count();
    member.await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let order = finished.lock().unwrap().clone();
    let position = order.iter().position(|o| *o == "interactive").unwrap();
    // At most the one bulk change already in flight goes before it.
    assert!(
        position <= bulk_done_before + 1,
        "interactive change finished after {position} bulk ones ({bulk_done_before} were done when it was asked): {order:?}"
    );
    assert!(
        bulk_done_before < 11,
        "the bulk work did not queue up: {order:?}"
    );
    for user in &users {
        assert!(roles_of(&sim, guild, *user).contains(&role));
    }
    // Waited out per Discord's headers, not by hammering into 429s.
    let limited = sim.control().stats().rest_rate_limited;
    assert_eq!(limited, 0, "requests answered 429");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_for_a_member_who_left_is_reported_as_such() {
    let sim = Simulator::start(SimConfig {
        token: "test-token".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let guild = sim.control().create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 1,
        roles_per_guild: 1,
    })[0];
    let role = sim.control().guild(guild).unwrap().role_ids[1];
    let user = sim.control().members(guild).unwrap()[0].user_id;
    sim.control().remove_member(guild, user).unwrap();
    let discord = alone(&sim, 1);
    let result = discord
        .change_role(
            worker::discord::RoleChange {
                guild_id: guild,
                user_id: user,
                role_id: role,
                add: true,
                reason: "test".into(),
            },
            wire::check::CheckPriority::Bulk,
        )
        .await;
    assert!(
        matches!(result, Err(worker::discord::DiscordError::MemberGone { guild: g, user: u }) if g == guild && u == user),
        "{result:?}"
    );
    sim.shutdown().await;
}

/// A worker asked to stop does not first finish a re-check pass that
/// Discord's limits stretch over minutes (as after a big server's first
/// sync): members it had not reached are due again soon for whoever runs
/// next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_promptly_in_the_middle_of_a_long_recheck_pass() {
    let sim = Simulator::start(SimConfig {
        token: "test-token".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let guild = sim.control().create_guilds(&GuildsSpec {
        count: 1,
        members_per_guild: 0,
        roles_per_guild: 2,
    })[0];
    let gated = sim.control().guild(guild).unwrap().role_ids[1];
    let chain = FakeChain::start().await.unwrap();
    chain.deploy(CONTRACT.parse().unwrap(), FakeContract::Erc20);
    let mut h = Harness::new("worker_stop_mid_pass").await;
    // Four role changes a second: 150 removals take most of a minute.
    h.config.discord = worker::discord::RoleChangeLimits {
        global_rate: 4,
        ..worker::discord::RoleChangeLimits::default()
    };
    h.enable_role_sync(
        &sim.api_url(),
        chain.url(),
        RoleSyncConfig {
            grace: Duration::ZERO,
            recheck_period: Duration::from_secs(3600),
            scan_interval: Duration::from_millis(200),
            scan_batch: 500,
            check_min_read_age: Duration::ZERO,
        },
    );
    h.start_worker();
    h.publish(&guild_join(guild, "s", 1)).await;
    h.wait_for_count("SELECT count(*) FROM communities", 1)
        .await;
    h.gate_role(guild, CONTRACT, gated, "10").await;
    // Members holding the gated role without a wallet: each is due a
    // removal.
    for n in 0..150u64 {
        let user = sim
            .control()
            .add_member(guild, discord_sim::NewMember::default())
            .unwrap();
        h.publish(&member_join_with_roles(
            guild,
            user,
            "s",
            10 + n,
            vec![gated],
        ))
        .await;
    }
    h.wait_for_count("SELECT count(*) FROM profiles", 150).await;
    testkit::eventually("role removals reaching Discord", common::WAIT, || async {
        sim.control().stats().role_requests >= 4
    })
    .await;
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), h.stop_worker())
        .await
        .expect("the worker stopped within 15 s");
    assert!(
        sim.control().stats().role_requests < 100,
        "the pass was not cut short: it ran to the end ({:?})",
        started.elapsed()
    );
}

/// Publishes an interactive check of each of `users`, numbered from `n`.
async fn check_all(h: &Harness, guild: GuildId, users: &[UserId], n: u32) {
    for (i, user) in users.iter().enumerate() {
        check_now(h, guild, *user, n + i as u32).await;
    }
}

/// A token-gated guild whose member `i` has linked `wallet(i + 1)`, each in
/// a transaction of their own as members do (one transaction linking them
/// all would lock their profiles in its own order, against the checks that
/// their joins started).
async fn gated_world_linked_one_by_one(label: &str, members: usize) -> common::GatedGuild {
    let g = common::GatedGuild::start(label, CONTRACT, members, Duration::ZERO).await;
    for (i, user) in g.members.iter().enumerate() {
        let tx = g.h.store.begin(g.tenant).await.unwrap();
        tx.profiles()
            .link_wallet(*user, &WalletAddress::parse(&wallet(i as u8 + 1)).unwrap())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    g
}

async fn no_check_in_progress(h: &Harness) {
    assert_eq!(
        h.wait_for_count(
            "SELECT count(*) FROM profiles WHERE check_lease_until > now()",
            0
        )
        .await,
        0,
        "a check kept holding members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_checks_of_one_community_are_checked_in_batches() {
    const MEMBERS: usize = 60;
    let mut g = gated_world_linked_one_by_one("worker_check_batches", MEMBERS).await;
    // Every member's join check is over before the checks under test.
    g.h.drained().await;
    // One in six holds: ten grants, within one window of Discord's
    // per-server limit on role changes (10 per 10 s).
    let holds = |member: usize| member.is_multiple_of(6);
    for member in 0..MEMBERS {
        set_balance(&g.chain, member, if holds(member) { 100 } else { 0 });
    }
    // Queued while no worker runs, as a burst of joins leaves them. The
    // worker stops once no check holds a member (the startup scan's
    // included): a check cut off would hold its members for a minute.
    no_check_in_progress(&g.h).await;
    g.h.stop_worker().await;
    check_all(&g.h, g.guild, &g.members, 1).await;
    g.h.start_worker();

    for (i, user) in g.members.iter().enumerate() {
        assert!(
            wait_for_role(&g.sim, g.guild, *user, g.gated, holds(i)).await,
            "member {i} {} the role; dead letters: {:?}; Discord: {:?}",
            if holds(i) { "never got" } else { "was given" },
            g.h.dead_letters().await,
            g.sim.control().stats()
        );
    }
    g.h.drained().await;
    // Each check takes a lease on its members' profiles and gives it back
    // when it writes its decisions: the transactions that last wrote the
    // profiles are the checks' (rows written by one share its xmin). One
    // check at a time writes 60; batches write far fewer (the first
    // arrivals start alone before the rest queue behind them, and the
    // startup scan writes some too).
    let (released, transactions): (i64, i64) = {
        let row =
            g.h.db
                .admin()
                .await
                .query_one(
                    "SELECT count(*) FILTER (WHERE check_lease_until IS NULL),
                        count(DISTINCT xmin::text)
                 FROM profiles",
                    &[],
                )
                .await
                .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(released, MEMBERS as i64, "a check kept its lease");
    assert!(
        transactions <= (MEMBERS / 2) as i64,
        "{MEMBERS} queued checks of one community were written by {transactions} transactions"
    );
    assert!(g.h.dead_letters().await.is_empty());
    g.h.stop_worker().await;
    g.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_communitys_checks_run_one_batch_at_a_time() {
    const MEMBERS: usize = 30;
    const WAVES: u32 = 4;
    let mut g = gated_world_linked_one_by_one("worker_check_one_batch", MEMBERS).await;
    g.h.drained().await;
    // Nobody qualifies and nobody holds the role: every check reads the
    // chain and writes its decisions, and none waits on Discord.
    for member in 0..MEMBERS {
        set_balance(&g.chain, member, 0);
    }
    no_check_in_progress(&g.h).await;
    // A community's share of the handlers is several (commands use it);
    // its checks still go one batch at a time.
    g.h.stop_worker().await;
    g.h.config.community_concurrency = Some(4);
    g.h.start_worker();
    // Watched from the side: the members a check leases share one lease
    // (its transaction's now() plus the lease time), so two lease values at
    // once are two checks of the community in flight.
    let admin = g.h.db.admin().await;
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let watching = watching.clone();
        tokio::spawn(async move {
            let (mut most, mut samples) = (0_i64, 0_u32);
            while !watching.is_cancelled() {
                let leases: i64 = admin
                    .query_one(
                        "SELECT count(DISTINCT check_lease_until) FROM profiles
                         WHERE check_lease_until > now()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                most = most.max(leases);
                samples += 1;
            }
            (most, samples)
        })
    };
    // Asked for while the worker runs, as members' joins and commands ask.
    for wave in 0..WAVES {
        check_all(&g.h, g.guild, &g.members, 1 + wave * MEMBERS as u32).await;
    }
    g.h.drained().await;
    no_check_in_progress(&g.h).await;
    watching.cancel();
    let (most, samples) = watcher.await.unwrap();
    assert!(samples > 10, "the leases were looked at {samples} times");
    assert_eq!(
        most, 1,
        "checks of one community held members in {most} leases at once"
    );
    // Every check was made: each member's decision is recorded.
    let decided =
        g.h.db
            .admin()
            .await
            .query_one("SELECT count(*) FROM role_grants WHERE NOT eligible", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
    assert_eq!(decided, MEMBERS as i64);
    assert!(g.h.dead_letters().await.is_empty());
    g.h.stop_worker().await;
    g.sim.shutdown().await;
}

/// Joins applied in one membership batch ask for one check naming all
/// their members, not one each: under a flood of joins a check message per
/// member was as many JetStream writes, deliveries and acks as the joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_joins_asks_for_one_check_of_all_its_members() {
    const MEMBERS: u64 = 40;
    let mut g = common::GatedGuild::start("worker_join_checks", CONTRACT, 0, Duration::ZERO).await;
    g.h.drained().await;
    // Queued while no worker runs, as a burst of joins leaves them.
    g.h.stop_worker().await;
    let users: Vec<UserId> = (0..MEMBERS)
        .map(|i| UserId::new(900_000 + i).unwrap())
        .collect();
    for (i, user) in users.iter().enumerate() {
        g.h.publish(&member_join_with_roles(
            g.guild,
            *user,
            "s",
            100 + i as u64,
            vec![],
        ))
        .await;
    }
    g.h.start_worker();
    // Nobody holds the token: each joiner's check decides "not eligible".
    assert_eq!(
        g.h.wait_for_count(
            "SELECT count(*) FROM role_grants WHERE NOT eligible",
            MEMBERS as i64
        )
        .await,
        MEMBERS as i64
    );
    let asked: Vec<_> =
        g.h.checks_requested()
            .await
            .into_iter()
            .filter(|c| c.reason == "member.join")
            .collect();
    let named: Vec<UserId> = asked
        .iter()
        .flat_map(wire::check::EligibilityCheck::members)
        .collect();
    let mut sorted = named.clone();
    sorted.sort();
    assert_eq!(sorted, users, "the joins' checks named {named:?}");
    // The first joins start alone while the rest arrive; the rest go in
    // batches of up to 64.
    assert!(
        asked.len() <= (MEMBERS / 4) as usize,
        "{MEMBERS} joins asked for {} checks",
        asked.len()
    );
    assert!(g.h.dead_letters().await.is_empty());
    g.h.stop_worker().await;
    g.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_check_in_a_batch_is_dead_lettered_alone() {
    // Each gets the role: within one window of Discord's per-server limit.
    const MEMBERS: usize = 10;
    let mut g = gated_world_linked_one_by_one("worker_check_poison", MEMBERS).await;
    g.h.drained().await;
    for member in 0..MEMBERS {
        set_balance(&g.chain, member, 100);
    }
    no_check_in_progress(&g.h).await;
    g.h.stop_worker().await;
    let (first, rest) = g.members.split_at(MEMBERS / 2);
    check_all(&g.h, g.guild, first, 1).await;
    // Keyed to the same community, so it lands in the same batch, but no
    // check can be read from it.
    let bad = format!(
        r#"{{"guild_id":"{}","user_id":"not a snowflake"}}"#,
        g.guild
    );
    g.h.publish_raw(
        wire::subjects::ELIGIBILITY_CHECK,
        Box::leak(bad.into_bytes().into_boxed_slice()),
    )
    .await;
    check_all(&g.h, g.guild, rest, 100).await;
    g.h.start_worker();

    for user in &g.members {
        assert!(
            wait_for_role(&g.sim, g.guild, *user, g.gated, true).await,
            "member {user} never got the role; dead letters: {:?}",
            g.h.dead_letters().await
        );
    }
    g.h.drained().await;
    let dead = g.h.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.contains("undecodable eligibility check"),
        "{dead:?}"
    );
    g.h.stop_worker().await;
    g.sim.shutdown().await;
}
