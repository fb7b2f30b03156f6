//! The demo's world (simulator, fake chain, gateway, worker) and the
//! scenario it plays.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use bus::{Namespace, Process, Topology};
use discord_sim::{GuildsSpec, NewMember, SimConfig, Simulator};
use domain::{badges, rules, Actor, CommunityRef};
use eligibility::{
    fake_chain::{FakeChain, FakeContract},
    Address, U256,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::json;
use store::{
    repo::{BadgeEvaluator, NewBadge},
    Store, StoreError, TenantId, WalletAddress,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::{
    check::{CheckPriority, EligibilityCheck},
    GuildId, RoleId, UserId,
};

use crate::rechecks::BusRechecks;
use crate::{db_args::DbArgs, nats_args::ProcessLogins};

/// The demo's token: only the simulator ever sees it.
const TOKEN: &str = "demo-bot-token";
/// The gated ERC-20 on the fake chain.
pub const CONTRACT: &str = "0x00000000000000000000000000000000000d3e00";
pub const HOLDER_MIN: u64 = 100;
pub const WHALE_MIN: u64 = 1000;

pub struct Plan {
    pub communities: u32,
    /// Members each server already has when the gateway connects (what a
    /// first sync ingests).
    pub members_at_start: u32,
    pub members: u32,
    pub join_rate: u32,
    pub shards: u32,
    /// How often every member is checked again. The demo uses
    /// [`DEMO_RECHECK_PERIOD`] to show removals within its minutes; a
    /// benchmark of member events uses production's, or the re-checks of
    /// everyone it added become most of what it measures.
    pub recheck_period: Duration,
    /// The worker's `community_concurrency` (`None`: its default).
    pub community_concurrency: Option<usize>,
}

/// The demo's re-check period (production's default is 6 hours).
pub const DEMO_RECHECK_PERIOD: Duration = Duration::from_secs(30);

/// The database and NATS server a run of the whole pipeline uses: the flags
/// every benchmark built on [`World`] shares.
#[derive(Debug, clap::Args)]
pub struct WorldArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// The NATS users of the gateway, worker and API the run starts, and of
    /// the run itself (creating and deleting its streams): `.stack/env`
    /// names them.
    #[command(flatten)]
    pub nats_logins: ProcessLogins,
}

impl WorldArgs {
    /// Starts `plan`'s world in a NATS namespace of its own (`label` and the
    /// time), runs `measure` against it and stops the world whatever
    /// `measure` returned. `measure` also gets the moment the world began
    /// starting. The wallet-link site is never visited by a benchmark; the
    /// worker needs one all the same.
    pub async fn with_world<T>(
        &self,
        label: &str,
        pool_size: usize,
        plan: &Plan,
        measure: impl AsyncFnOnce(&World, &Store, Instant) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let store = self.db.connect(pool_size).await?;
        let js = async_nats::jetstream::new(
            self.nats_logins
                .connect(&self.nats_url, Process::Admin)
                .await?,
        );
        let namespace =
            Namespace::prefixed(&format!("{label}{}", chrono::Utc::now().timestamp_millis()))
                .context("building the benchmark's NATS namespace")?;
        let site = domain::wallets::Site::parse("http://127.0.0.1:9")
            .context("the benchmark's wallet-link address")?;
        let started = Instant::now();
        let world = World::start(
            plan,
            &store,
            &js,
            (&self.nats_url, &self.nats_logins),
            &namespace,
            site,
        )
        .await?;
        let result = measure(&world, &store, started).await;
        world.stop(&js, &namespace).await;
        result
    }
}

/// One community of the scenario.
#[derive(Clone, Debug)]
pub struct Community {
    pub guild: GuildId,
    pub tenant: TenantId,
    /// Gated on holding ≥ HOLDER_MIN tokens.
    pub holder_role: RoleId,
    /// Gated on holding ≥ WHALE_MIN tokens.
    pub whale_role: RoleId,
    pub holder_rule: store::RuleId,
}

/// What the scenario did, for the summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TrafficReport {
    pub joined: u64,
    pub wallets_linked: u64,
    pub balances_dropped: u64,
    pub left: u64,
}

pub struct World {
    pub sim: Simulator,
    pub chain: FakeChain,
    pub gateway_http: std::net::SocketAddr,
    gateway: gateway::Gateway,
    worker: (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
    ),
    pub guilds: Vec<GuildId>,
    contract: Address,
    /// The demo's own (admin) connection: inspecting and removing streams.
    js: async_nats::jetstream::Context,
    /// The API's: eligibility checks after a wallet link or a rule change.
    api: async_nats::jetstream::Context,
    namespace: Namespace,
    pub linked: Arc<AtomicU64>,
}

/// The demo's one chain, `demo`: the fake chain, cached briefly.
pub fn chains(chain: &FakeChain) -> eligibility::EligibilityConfig {
    let mut config = eligibility::ChainConfig::new(vec![chain.url()]);
    config.cache_ttl_secs = 5;
    // Contract wallets (EIP-1271) are asked on the chain a message names.
    config.chain_id = Some(chain.chain_id());
    eligibility::EligibilityConfig {
        chains: [("demo".to_owned(), config)].into_iter().collect(),
    }
}

impl World {
    /// Gives `holder` a balance of the demo token (for a wallet a test or
    /// a person links through the page).
    pub fn fund(&self, holder: Address, balance: u64) {
        self.chain
            .set_erc20_balance(self.contract, holder, U256::from(balance));
    }

    pub async fn start(
        plan: &Plan,
        store: &Store,
        js: &async_nats::jetstream::Context,
        (nats_url, logins): (&str, &ProcessLogins),
        namespace: &Namespace,
        public_site: domain::wallets::Site,
    ) -> anyhow::Result<World> {
        let sim = Simulator::start(SimConfig {
            token: TOKEN.into(),
            shard_count: plan.shards,
            identify_interval_ms: 0,
            max_concurrency: 16,
            // Discord's per-guild limit on role changes (10 per 10 s) would
            // stretch the demo to many minutes; keep the global 50/s.
            rest: discord_sim::RestLimits {
                route_limit: 50,
                route_window_ms: 1_000,
                ..Default::default()
            },
            ..SimConfig::default()
        })
        .await
        .context("starting the Discord simulator")?;
        let guilds = sim.control().create_guilds(&GuildsSpec {
            count: plan.communities as usize,
            members_per_guild: plan.members_at_start as usize,
            roles_per_guild: 3,
        });
        for guild in &guilds {
            let known = store
                .directory()
                .resolve_guild(*guild)
                .await
                .map_err(|e| crate::db_args::explain(e, "DATABASE_URL"))?;
            if known.is_some() {
                anyhow::bail!(
                    "the database already holds demo communities: run the demo against a fresh database (scripts/demo creates one)"
                );
            }
        }

        let chain = FakeChain::start()
            .await
            .context("starting the fake chain")?;
        let contract: Address = CONTRACT.parse().context("demo contract address")?;
        chain.deploy(contract, FakeContract::Erc20);

        // The worker: role sync against the simulator's REST and the fake chain.
        let evaluator =
            eligibility::Evaluator::new(&chains(&chain)).context("eligibility configuration")?;
        let topology = demo_topology(namespace);
        let discord = worker::discord::Discord::new(
            TOKEN,
            Some(&sim.api_url()),
            worker::discord::RoleChangeLimits {
                in_flight: 16,
                ..worker::discord::RoleChangeLimits::default()
            },
            worker::discord::Sharing::Nats {
                jetstream: js.clone(),
                topology: topology.clone(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // What an operator does once per deployment (`gatehouse commands register`).
        discord
            .register_commands(sim.config().application_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let role_sync = Arc::new(worker::RoleSync::new(
            store.clone(),
            Arc::new(evaluator),
            discord,
            domain::role_sync::RoleSyncConfig {
                // Show removals within the demo's minutes.
                grace: Duration::ZERO,
                recheck_period: plan.recheck_period,
                scan_interval: Duration::from_secs(1),
                scan_batch: 500,
                // A balance the demo changes is checked at once: show the
                // change, not a read from moments before.
                check_min_read_age: Duration::ZERO,
            },
        ));
        let worker_config = worker::WorkerConfig {
            topology: topology.clone(),
            backoff: vec![Duration::from_millis(200), Duration::from_secs(1)],
            ack_wait: Duration::from_secs(10),
            public_site: Some(public_site),
            community_concurrency: plan.community_concurrency,
            ..worker::WorkerConfig::default()
        };
        let stop_worker = CancellationToken::new();
        let worker_js =
            async_nats::jetstream::new(logins.connect(nats_url, Process::Worker).await?);
        let worker = tokio::spawn(worker::run(
            worker_config,
            worker_js,
            store.clone(),
            Some(role_sync),
            stop_worker.clone(),
        ));

        // The gateway: real Twilight shards against the simulator.
        let settings = gateway::Settings {
            discord_token: Some(gateway::Token::new(TOKEN)),
            shards: Some(format!("0-{}", plan.shards - 1)),
            total_shards: Some(plan.shards.to_string()),
            discord_gateway_url: Some(sim.gateway_url()),
            discord_api_url: Some(sim.api_url()),
            identify_queue: Some("unlimited".into()),
            nats_url: Some(nats_url.into()),
            nats_namespace: namespace.prefix().map(str::to_owned),
            http_addr: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let mut config =
            gateway::GatewayConfig::from_settings(settings).context("gateway configuration")?;
        // The very definition the worker ensured.
        config.topology = topology;
        config.nats = logins.settings(nats_url, Process::Gateway)?;
        let gateway = gateway::Gateway::start(config)
            .await
            .context("starting the gateway")?;
        let gateway_http = gateway.http_addr();
        Ok(World {
            sim,
            chain,
            gateway_http,
            gateway,
            worker: (stop_worker, worker),
            guilds,
            contract,
            js: js.clone(),
            api: async_nats::jetstream::new(logins.connect(nats_url, Process::Api).await?),
            namespace: namespace.clone(),
            linked: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn dead_letter_stream(&self) -> String {
        self.namespace.stream_name(&wire::subjects::DEAD_LETTER)
    }

    /// Messages of `spec`'s stream the worker has not acknowledged yet
    /// (waiting plus in flight). Unknown counts as busy.
    pub async fn pending(&self, spec: &wire::subjects::StreamSpec) -> u64 {
        let stream = self.namespace.stream_name(spec);
        let consumer = self
            .namespace
            .name(&format!("worker_{}", spec.name.to_ascii_lowercase()));
        let Ok(mut stream) = self.js.get_stream(&stream).await else {
            return u64::MAX;
        };
        let Ok(info) = stream.consumer_info(&consumer).await else {
            return u64::MAX;
        };
        let _ = stream.info().await;
        info.num_pending + info.num_ack_pending as u64
    }

    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// Waits until the worker has provisioned a community for every guild
    /// (the gateway publishes their GUILD_CREATEs as guild.join).
    pub async fn wait_for_communities(
        &self,
        store: &Store,
        within: Duration,
    ) -> anyhow::Result<Vec<Community>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        for guild in &self.guilds {
            let tenant = loop {
                if let Some(t) = store.directory().resolve_guild(*guild).await? {
                    break t;
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "guild {guild} was not provisioned within {within:?}: is the gateway connected (see its logs) and the worker consuming?"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let info = self.sim.control().guild(*guild)?;
            out.push(Community {
                guild: *guild,
                tenant,
                // role_ids[0] is @everyone.
                holder_role: info.role_ids[1],
                whale_role: info.role_ids[2],
                // Set once the rules exist (define_rules_and_badges).
                holder_rule: store::RuleId::from_uuid(uuid::Uuid::nil()),
            });
        }
        Ok(out)
    }

    /// Gates `role` of `community` on `spec`, as an admin would (which asks
    /// for a bulk re-check of every member).
    pub async fn define_rule(
        &self,
        store: &Store,
        community: &Community,
        role: RoleId,
        spec: eligibility::RuleSpec,
    ) -> anyhow::Result<()> {
        let rechecks = BusRechecks::new(self.api.clone(), self.namespace.clone());
        rules::create(
            store,
            &rechecks,
            CommunityRef {
                tenant: community.tenant,
                guild: community.guild,
            },
            &Actor::Admin(Some("bench".into())),
            &rules::NewRule {
                role,
                spec,
                priority: 1,
            },
        )
        .await?;
        Ok(())
    }

    pub async fn define_rules_and_badges(
        &self,
        store: &Store,
        communities: &[Community],
    ) -> anyhow::Result<Vec<Community>> {
        let rechecks = BusRechecks::new(self.api.clone(), self.namespace.clone());
        let actor = Actor::Admin(Some("demo".into()));
        let mut out = Vec::new();
        for c in communities {
            let rule = |role: RoleId, min: u64, priority: i32| -> anyhow::Result<rules::NewRule> {
                let spec = eligibility::RuleSpec::parse(
                    "token_balance",
                    Some("demo"),
                    Some(CONTRACT),
                    &json!({ "min_balance": min.to_string() }),
                )
                .map_err(|e| anyhow::anyhow!("the demo's rule is invalid: {e}"))?;
                Ok(rules::NewRule {
                    role,
                    spec,
                    priority,
                })
            };
            let community = CommunityRef {
                tenant: c.tenant,
                guild: c.guild,
            };
            let holder = rules::create(
                store,
                &rechecks,
                community,
                &actor,
                &rule(c.holder_role, HOLDER_MIN, 1)?,
            )
            .await?;
            rules::create(
                store,
                &rechecks,
                community,
                &actor,
                &rule(c.whale_role, WHALE_MIN, 2)?,
            )
            .await?;
            let tx = store.begin(c.tenant).await?;
            badges::define(
                &tx,
                &actor,
                &NewBadge {
                    slug: "pioneer".into(),
                    name: "Pioneer".into(),
                    description: "One of the first 50 members".into(),
                    evaluator: BadgeEvaluator::JoinOrder,
                    criteria: json!({ "first": 50 }),
                },
            )
            .await?;
            tx.commit().await?;
            out.push(Community {
                holder_rule: holder.id,
                ..c.clone()
            });
        }
        Ok(out)
    }

    /// Members join at the planned rate; most link a wallet a little later;
    /// at the end some balances drop and some members leave.
    pub fn play_members(
        &self,
        plan: &Plan,
        store: &Store,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<TrafficReport>> + Send + 'static {
        let control = self.sim.control().clone();
        let guilds = self.guilds.clone();
        let chain_handle = ChainHandle {
            chain: self.chain.clone(),
            contract: self.contract,
        };
        let store = store.clone();
        // Checks after a wallet link come from the link page: the API.
        let js = self.api.clone();
        let namespace = self.namespace.clone();
        let linked = self.linked.clone();
        let members = plan.members;
        let interval = Duration::from_secs_f64(1.0 / f64::from(plan.join_rate));
        async move {
            let mut rng = SmallRng::seed_from_u64(42);
            let mut tick = tokio::time::interval(interval);
            let mut links = tokio::task::JoinSet::new();
            let mut holders = Vec::new();
            let mut report = TrafficReport::default();
            for i in 0..u64::from(members) {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let guild = guilds[(i as usize) % guilds.len()];
                let user = control.add_member(
                    guild,
                    NewMember {
                        username: Some(format!("member{i}")),
                        ..Default::default()
                    },
                )?;
                report.joined += 1;
                if rng.random_bool(0.7) {
                    // 45 % hold enough for the holder role, 15 % for both.
                    let roll: f64 = rng.random();
                    let balance = if roll < 0.15 {
                        rng.random_range(WHALE_MIN..WHALE_MIN * 10)
                    } else if roll < 0.60 {
                        rng.random_range(HOLDER_MIN..WHALE_MIN)
                    } else {
                        rng.random_range(0..HOLDER_MIN)
                    };
                    let wallet = wallet_of(i);
                    if balance >= HOLDER_MIN {
                        holders.push((guild, user, wallet.clone()));
                    }
                    let delay = Duration::from_millis(rng.random_range(300..2500));
                    let (store, js, namespace, chain, linked) = (
                        store.clone(),
                        js.clone(),
                        namespace.clone(),
                        chain_handle.clone(),
                        linked.clone(),
                    );
                    links.spawn(async move {
                        tokio::time::sleep(delay).await;
                        chain.set_balance(&wallet, balance)?;
                        link_wallet(&store, guild, user, &wallet).await?;
                        request_check(&js, &namespace, guild, user, "wallet.linked").await;
                        linked.fetch_add(1, Ordering::Relaxed);
                        anyhow::Ok(())
                    });
                }
            }
            while let Some(done) = links.join_next().await {
                done.context("wallet link task")??;
                report.wallets_linked += 1;
            }
            // A few holders sell: their next check removes the role.
            for (guild, user, wallet) in holders.iter().step_by(20) {
                chain_handle.set_balance(wallet, 0)?;
                request_check(&js, &namespace, *guild, *user, "balance.changed").await;
                report.balances_dropped += 1;
            }
            // A few members leave.
            for i in (0..report.joined).step_by(33) {
                let guild = guilds[(i as usize) % guilds.len()];
                let Ok(list) = control.members(guild) else {
                    continue;
                };
                if let Some(m) = list.get((i as usize / guilds.len()) % list.len().max(1)) {
                    if control.remove_member(guild, m.user_id).is_ok() {
                        report.left += 1;
                    }
                }
            }
            Ok(report)
        }
    }

    /// Stops the gateway (sessions saved), the worker (in-flight finished)
    /// and the simulator, and deletes the demo's streams.
    pub async fn stop(self, js: &async_nats::jetstream::Context, namespace: &Namespace) {
        if let Err(e) = self.gateway.shutdown().await {
            tracing::warn!(error = %e, "gateway shutdown");
        }
        let (token, task) = self.worker;
        token.cancel();
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "worker stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "worker task"),
            Ok(Ok(())) => {}
        }
        self.sim.shutdown().await;
        let topology = demo_topology(namespace);
        for stream in topology.stream_configs().into_iter().chain([
            topology.sessions_stream_config(),
            topology.discord_budget_stream_config(),
        ]) {
            let _ = js.delete_stream(&stream.name).await;
        }
    }
}

fn wallet_of(i: u64) -> String {
    format!("0x{:040x}", 0xd3e0_0000_0000u64 + i)
}

#[derive(Clone)]
struct ChainHandle {
    chain: FakeChain,
    contract: Address,
}

impl ChainHandle {
    fn set_balance(&self, wallet: &str, balance: u64) -> anyhow::Result<()> {
        let holder: Address = wallet.parse().context("demo wallet")?;
        self.chain
            .set_erc20_balance(self.contract, holder, U256::from(balance));
        Ok(())
    }
}

/// Links a wallet as `/link-wallet` would once the signature checks out.
/// The member's profile appears when the worker has processed the join, so
/// wait for it.
async fn link_wallet(
    store: &Store,
    guild: GuildId,
    user: UserId,
    wallet: &str,
) -> anyhow::Result<()> {
    let wallet = WalletAddress::parse(wallet)?;
    let tenant = store
        .directory()
        .resolve_guild(guild)
        .await?
        .context("demo guild has no community")?;
    // Generous: with thousands of members the join can wait behind a backlog.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let tx = store.begin(tenant).await?;
        match tx.profiles().link_wallet(user, &wallet).await {
            Ok(_) => {
                tx.commit().await?;
                return Ok(());
            }
            Err(StoreError::NotFound { .. }) if tokio::time::Instant::now() < deadline => {
                // Roll back rather than drop: a dropped transaction costs
                // its connection, and this loop would churn through them.
                tx.rollback().await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context("linking a demo wallet"),
        }
    }
}

/// Streams in memory, kept an hour: the demo deletes them when it ends.
fn demo_topology(namespace: &Namespace) -> Topology {
    Topology::new(namespace.clone())
        .with_storage(bus::Storage::Memory)
        .with_max_age(Duration::from_secs(3600))
}

async fn request_check(
    js: &async_nats::jetstream::Context,
    namespace: &Namespace,
    guild: GuildId,
    user: UserId,
    reason: &str,
) {
    let check = EligibilityCheck {
        id: format!(
            "demo:{reason}:{guild}:{user}:{}",
            chrono::Utc::now().timestamp_micros()
        ),
        guild_id: guild,
        user_id: Some(user),
        more_user_ids: Vec::new(),
        reason: reason.to_owned(),
        priority: CheckPriority::Interactive,
        requested_at: chrono::Utc::now().timestamp_millis(),
    };
    if let Err(e) = bus::publish_check(js, namespace, &check).await {
        tracing::warn!(error = %e, "eligibility check not stored");
    }
}
