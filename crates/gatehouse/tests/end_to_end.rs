//! The whole path, as production runs it: the Discord simulator → a real
//! Twilight shard in the gateway → NATS JetStream → the worker →
//! PostgreSQL through PgBouncer, and back to the simulator's REST API for
//! roles and interaction replies. Nothing is published by the test itself:
//! every event starts as something happening in the simulator.

use std::time::Duration;

use bus::Topology;
use discord_sim::{GuildsSpec, NewInteraction, NewMember, SimConfig, Simulator};
use eligibility::{
    fake_chain::{FakeChain, FakeContract, Fault},
    Address, U256,
};
use store::TenantId;
use testkit::{nats::NatsScope, TestDb};
use tokio_util::sync::CancellationToken;
use wire::{GuildId, RoleId, UserId};

const TOKEN: &str = "e2e-test-token";
const CONTRACT: &str = "0x00000000000000000000000000000000000e2e01";
const WAIT: Duration = Duration::from_secs(30);

type WorkerTask = tokio::task::JoinHandle<Result<(), worker::WorkerError>>;

/// Simulator, fake chain, gateway and worker over the stack's real services,
/// with a database and NATS namespace of the test's own.
struct Stack {
    db: TestDb,
    store: store::Store,
    /// The test's own namespace on the stack's NATS; its streams go with it.
    nats: NatsScope,
    sim: Simulator,
    chain: FakeChain,
    gateway: Option<gateway::Gateway>,
    worker: Option<(CancellationToken, WorkerTask)>,
}

impl Stack {
    async fn start(label: &str, guilds: usize) -> (Stack, Vec<GuildId>) {
        let db = TestDb::create(label).await;
        let store = db.store(8).await;
        let nats = NatsScope::new(&db.env.nats).await;
        let sim = Simulator::start(SimConfig {
            token: TOKEN.into(),
            identify_interval_ms: 0,
            heartbeat_interval_ms: 1_000,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let guild_ids = sim.control().create_guilds(&GuildsSpec {
            count: guilds,
            members_per_guild: 0,
            roles_per_guild: 2,
        });
        let chain = FakeChain::start().await.unwrap();
        chain.deploy(contract(), FakeContract::Erc20);
        let mut stack = Stack {
            db,
            store,
            nats,
            sim,
            chain,
            gateway: None,
            worker: None,
        };
        bus::ensure_streams(&stack.nats.js, &stack.topology())
            .await
            .unwrap();
        stack.start_worker().await;
        stack.start_gateway().await;
        (stack, guild_ids)
    }

    async fn start_worker(&mut self) {
        let mut chain = eligibility::ChainConfig::new(vec![self.chain.url()]);
        chain.timeout_ms = 500;
        chain.cache_ttl_secs = 0;
        let evaluator = eligibility::Evaluator::new(&eligibility::EligibilityConfig {
            chains: [("testchain".to_owned(), chain)].into_iter().collect(),
        })
        .unwrap();
        let discord = worker::discord::Discord::new(
            TOKEN,
            Some(&self.sim.api_url()),
            worker::discord::RoleChangeLimits::default(),
            worker::discord::Sharing::Nats {
                jetstream: self.nats.js.clone(),
                topology: self.topology(),
            },
        )
        .unwrap();
        let role_sync = worker::RoleSync::new(
            self.store.clone(),
            std::sync::Arc::new(evaluator),
            discord,
            domain::role_sync::RoleSyncConfig {
                grace: Duration::ZERO,
                recheck_period: Duration::from_secs(3600),
                scan_interval: Duration::from_secs(3600),
                scan_batch: 100,
                // Balances change and are checked at once.
                check_min_read_age: Duration::ZERO,
            },
        );
        let config = worker::WorkerConfig {
            topology: self.topology(),
            concurrency: 8,
            backoff: vec![Duration::from_millis(100)],
            // A killed worker's unacknowledged messages come back after this.
            ack_wait: Duration::from_secs(2),
            // The test re-checks a member right after changing a balance.
            commands: worker::CommandLimits {
                check_cooldown: Duration::ZERO,
                ..worker::CommandLimits::default()
            },
            ..worker::WorkerConfig::default()
        };
        let token = CancellationToken::new();
        // Each process with its own NATS user, as in production.
        let task = tokio::spawn(worker::run(
            config,
            self.nats.jetstream(bus::Process::Worker).await,
            self.store.clone(),
            Some(std::sync::Arc::new(role_sync)),
            token.clone(),
        ));
        self.worker = Some((token, task));
    }

    /// As a killed process: in-flight work is abandoned, nothing is acked.
    fn kill_worker(&mut self) {
        if let Some((_, task)) = self.worker.take() {
            task.abort();
        }
    }

    async fn start_gateway(&mut self) {
        let settings = gateway::Settings {
            discord_token: Some(gateway::Token::new(TOKEN)),
            shards: Some("0-0".into()),
            total_shards: Some("1".into()),
            discord_gateway_url: Some(self.sim.gateway_url()),
            discord_api_url: Some(self.sim.api_url()),
            identify_queue: Some("unlimited".into()),
            nats_url: Some(self.db.env.nats.url().to_owned().into()),
            nats_namespace: self.nats.ns.prefix().map(str::to_owned),
            http_addr: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let mut config = gateway::GatewayConfig::from_settings(settings).unwrap();
        config.topology = self.topology();
        config.nats = self.db.env.nats.settings(bus::Process::Gateway);
        self.gateway = Some(gateway::Gateway::start(config).await.unwrap());
    }

    async fn count(&self, query: &str) -> i64 {
        self.db.count(query).await
    }

    /// Polls `query` (as superuser on the test database) until it returns
    /// `want`; returns the last value.
    async fn wait_for_count(&self, query: &str, want: i64) -> i64 {
        self.db.wait_for_count(query, want, WAIT).await
    }

    async fn tenant(&self, guild: GuildId) -> TenantId {
        testkit::fixtures::tenant_of(&self.store, guild).await
    }

    /// A member joins the guild in the simulator (GUILD_MEMBER_ADD).
    fn join(&self, guild: GuildId) -> UserId {
        self.sim
            .control()
            .add_member(
                guild,
                NewMember {
                    user_id: None,
                    username: None,
                    nick: None,
                    roles: Vec::new(),
                    pending: false,
                    bot: false,
                },
            )
            .unwrap()
    }

    async fn gate(&self, guild: GuildId, role: RoleId, min_balance: &str) {
        testkit::fixtures::gate_role(&self.store, guild, CONTRACT, role, min_balance).await;
    }

    async fn link(&self, guild: GuildId, user: UserId, wallet: &str) {
        testkit::fixtures::link_wallet(&self.store, self.tenant(guild).await, user, wallet).await;
    }

    /// The member runs `/check` in the simulator; returns the final reply
    /// (the edit of the deferred response).
    async fn check(&self, guild: GuildId, user: UserId) -> String {
        let created = self
            .sim
            .control()
            .create_interaction(NewInteraction {
                guild_id: guild,
                user_id: user,
                command_name: "check".into(),
                options: Vec::new(),
                locale: None,
            })
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = self.sim.control().interaction(created.id).unwrap();
            if info.responses.len() >= 2 {
                assert_eq!(info.responses[0].callback_type, Some(5), "not deferred");
                assert_eq!(info.responses[1].action, "edit_original");
                return info.responses[1].body["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/check by {user} unanswered: {:?}",
                info.responses
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn roles_of(&self, guild: GuildId, user: UserId) -> Vec<RoleId> {
        self.sim.control().member(guild, user).unwrap().roles
    }

    async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.unwrap();
        }
        if let Some((token, task)) = self.worker.take() {
            token.cancel();
            task.await.unwrap().unwrap();
        }
        self.sim.shutdown().await;
    }

    /// One definition for the gateway and the worker: memory, an hour.
    fn topology(&self) -> Topology {
        Topology::new(self.nats.ns.clone())
            .with_storage(bus::Storage::Memory)
            .with_max_age(Duration::from_secs(3600))
    }
}

fn contract() -> Address {
    CONTRACT.parse().unwrap()
}

fn wallet(n: u8) -> String {
    format!("0x{}", format!("{n:02x}").repeat(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_become_roles_per_community_through_gateway_and_worker() {
    let (stack, guilds) = Stack::start("e2e_roles", 2).await;
    let (ga, gb) = (guilds[0], guilds[1]);
    // GUILD_CREATE on the shard's READY provisions both communities.
    assert_eq!(
        stack
            .wait_for_count("SELECT count(*) FROM communities WHERE active", 2)
            .await,
        2
    );
    // role_ids[0] is @everyone.
    let gated_a = stack.sim.control().guild(ga).unwrap().role_ids[1];
    let gated_b = stack.sim.control().guild(gb).unwrap().role_ids[1];
    // The same contract gates a role in both communities, at 10 and 1000.
    stack.gate(ga, gated_a, "10").await;
    stack.gate(gb, gated_b, "1000").await;

    let (rich, poor, walletless) = (stack.join(ga), stack.join(ga), stack.join(ga));
    let in_b = stack.join(gb);
    assert_eq!(
        stack
            .wait_for_count("SELECT count(*) FROM profiles WHERE left_at IS NULL", 4)
            .await,
        4
    );
    // Each join asks for a check of its own; let those finish first, or one
    // landing after the links below would grant the role ahead of /check.
    stack.nats.drained(WAIT).await;
    let holder = wallet(1);
    stack
        .chain
        .set_erc20_balance(contract(), holder.parse().unwrap(), U256::from(100u64));
    stack
        .chain
        .set_erc20_balance(contract(), wallet(2).parse().unwrap(), U256::from(5u64));
    stack.link(ga, rich, &holder).await;
    stack.link(ga, poor, &wallet(2)).await;
    // The same wallet in the other community: same balance, other rule.
    stack.link(gb, in_b, &holder).await;

    let reply = stack.check(ga, rich).await;
    assert!(reply.contains("1 role(s) granted"), "{reply}");
    assert!(stack.roles_of(ga, rich).contains(&gated_a));
    let reply = stack.check(ga, poor).await;
    assert!(!reply.contains("granted"), "{reply}");
    stack.check(ga, walletless).await;
    let reply = stack.check(gb, in_b).await;
    assert!(!reply.contains("granted"), "{reply}");
    assert!(!stack.roles_of(ga, poor).contains(&gated_a));
    assert!(!stack.roles_of(ga, walletless).contains(&gated_a));
    assert!(
        !stack.roles_of(gb, in_b).contains(&gated_b),
        "B's threshold is 1000; A's result leaked into B"
    );

    // The provider is down and the balance has dropped: nothing is removed.
    stack.chain.set_fault(Fault::Unavailable);
    stack
        .chain
        .set_erc20_balance(contract(), holder.parse().unwrap(), U256::ZERO);
    stack.check(ga, rich).await;
    assert!(
        stack.roles_of(ga, rich).contains(&gated_a),
        "an RPC outage removed a role"
    );
    // Provider back: the drop is seen and the role goes (grace period 0).
    stack.chain.set_fault(Fault::None);
    let reply = stack.check(ga, rich).await;
    assert!(reply.contains("1 removed"), "{reply}");
    assert!(!stack.roles_of(ga, rich).contains(&gated_a));

    // Audited in the member's community, with the rule that caused it.
    let audited = stack
        .count(&format!(
            "SELECT count(*) FROM audit_logs a JOIN communities c ON c.id = a.community_id
             WHERE c.discord_guild_id = {ga} AND a.metadata ->> 'discord_user_id' = '{rich}'
               AND a.action IN ('role.granted', 'role.removed') AND a.metadata ? 'rule_id'"
        ))
        .await;
    assert_eq!(audited, 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_survive_a_gateway_resume_and_a_killed_worker_exactly_once() {
    let (mut stack, guilds) = Stack::start("e2e_restarts", 1).await;
    let guild = guilds[0];
    assert_eq!(
        stack
            .wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(stack.join(guild));
    }
    // The connection drops: Twilight resumes and the simulator replays what
    // the shard had not acknowledged, so some events arrive twice.
    stack.sim.control().fault(0, discord_sim::Fault::Drop);
    for _ in 0..20 {
        members.push(stack.join(guild));
    }
    // The worker dies with work in flight and comes back.
    stack.kill_worker();
    for _ in 0..20 {
        members.push(stack.join(guild));
    }
    stack.start_worker().await;

    let all = members.len() as i64;
    assert_eq!(
        stack
            .wait_for_count("SELECT count(*) FROM profiles", all)
            .await,
        all,
        "joins lost"
    );
    // Exactly once in effect: one audit row per join, whatever was redelivered.
    assert_eq!(
        stack
            .wait_for_count(
                "SELECT count(*) FROM audit_logs WHERE action = 'member.joined'",
                all
            )
            .await,
        all
    );
    // Whatever was still to be redelivered has been handled by now.
    stack.nats.drained(WAIT).await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
            .await,
        all,
        "a redelivery had a second effect"
    );
    let stored: Vec<i64> = stack
        .db
        .column("SELECT discord_user_id FROM profiles ORDER BY discord_user_id")
        .await;
    let transcript = stack.sim.control().transcript(0);
    assert!(
        transcript.resumes >= 1,
        "the shard never resumed: {:?}",
        transcript.events
    );
    let mut expected: Vec<i64> = members.iter().map(|m| m.get() as i64).collect();
    expected.sort_unstable();
    assert_eq!(stored, expected);
    stack.stop().await;
}
