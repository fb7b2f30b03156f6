//! A worker running in-process against a throwaway database and its own
//! NATS namespace on the stack's NATS server.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream;
use bus::{Storage, Topology};
use testkit::{nats::NatsScope, TestDb};
use tokio_util::sync::CancellationToken;
use wire::{
    payload, Envelope, GuildId, GuildMarker, Id, Payload, RoleId, RoleMarker, UserId, UserMarker,
};
use worker::WorkerConfig;

/// How long a test waits for an effect before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub db: TestDb,
    pub store: store::Store,
    /// The test's own namespace on the stack's NATS; its streams go with it.
    pub nats: NatsScope,
    pub config: WorkerConfig,
    pub role_sync: Option<std::sync::Arc<worker::RoleSync>>,
    /// The worker's own connection, as the worker user.
    pub worker_js: jetstream::Context,
    worker: Option<(
        CancellationToken,
        tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
    )>,
}

impl Harness {
    pub async fn new(label: &str) -> Harness {
        let db = TestDb::create(label).await;
        let store = db.store(8).await;
        let nats = NatsScope::new(&db.env.nats).await;
        let config = WorkerConfig {
            topology: Topology::new(nats.ns.clone()).with_storage(Storage::Memory),
            concurrency: 8,
            max_attempts: 3,
            backoff: vec![Duration::from_millis(100)],
            // A killed worker's unacknowledged messages come back after this.
            ack_wait: Duration::from_secs(2),
            // Tests send commands in quick succession; the limits have
            // tests of their own.
            commands: worker::CommandLimits {
                member_burst: std::num::NonZeroU32::new(1000).unwrap(),
                community_burst: std::num::NonZeroU32::new(10_000).unwrap(),
                check_cooldown: Duration::ZERO,
                ..worker::CommandLimits::default()
            },
            ..WorkerConfig::default()
        };
        bus::ensure_streams(&nats.js, &config.topology)
            .await
            .unwrap();
        let worker_js = nats.jetstream(bus::Process::Worker).await;
        Harness {
            db,
            store,
            nats,
            config,
            role_sync: None,
            worker_js,
            worker: None,
        }
    }

    pub fn start_worker(&mut self) {
        let token = CancellationToken::new();
        let handle = tokio::spawn(worker::run(
            self.config.clone(),
            self.worker_js.clone(),
            self.store.clone(),
            self.role_sync.clone(),
            token.clone(),
        ));
        self.worker = Some((token, handle));
    }

    /// Graceful stop: finish in-flight work.
    pub async fn stop_worker(&mut self) {
        if let Some((token, handle)) = self.worker.take() {
            token.cancel();
            handle.await.unwrap().unwrap();
        }
    }

    /// Abrupt stop, as a killed process: in-flight work is abandoned.
    pub fn kill_worker(&mut self) {
        if let Some((_, handle)) = self.worker.take() {
            handle.abort();
        }
    }

    /// Syncs roles through `api_url` (the simulator's REST) with chain
    /// `testchain` read from `chain_url`.
    pub fn enable_role_sync(
        &mut self,
        api_url: &str,
        chain_url: url::Url,
        config: domain::role_sync::RoleSyncConfig,
    ) {
        self.enable_role_sync_on(api_url, chain_url, None, config);
    }

    /// As [`Harness::enable_role_sync`], with the chain's id configured: a
    /// signature that is not the wallet's key is then put to the contract
    /// wallet at the address (EIP-1271) on that chain, which turns "no
    /// contract there" into a definite refusal.
    pub fn enable_role_sync_on(
        &mut self,
        api_url: &str,
        chain_url: url::Url,
        chain_id: Option<u64>,
        config: domain::role_sync::RoleSyncConfig,
    ) {
        let mut chain = eligibility::ChainConfig::new(vec![chain_url]);
        chain.chain_id = chain_id;
        chain.timeout_ms = 500;
        chain.breaker.failure_threshold = 1000;
        let evaluator = eligibility::Evaluator::new(&eligibility::EligibilityConfig {
            chains: [("testchain".to_owned(), chain)].into_iter().collect(),
        })
        .unwrap();
        // Shared through the test's namespace, as the workers of one
        // deployment share it.
        let discord = worker::discord::Discord::new(
            "test-token",
            Some(api_url),
            self.config.discord.clone(),
            worker::discord::Sharing::Nats {
                jetstream: self.nats.js.clone(),
                topology: self.config.topology.clone(),
            },
        )
        .unwrap();
        self.role_sync = Some(std::sync::Arc::new(worker::RoleSync::new(
            self.store.clone(),
            std::sync::Arc::new(evaluator),
            discord,
            config,
        )));
    }

    /// Publishes as the gateway does: the envelope id as Nats-Msg-Id.
    pub async fn publish(&self, envelope: &Envelope) {
        self.nats.publish(envelope).await;
    }

    pub async fn publish_with_msg_id(&self, envelope: &Envelope, msg_id: &str) {
        self.nats.publish_with_msg_id(envelope, msg_id).await;
    }

    pub async fn publish_raw(&self, contract_subject: &str, body: &'static [u8]) {
        self.nats
            .js
            .publish(self.nats.ns.subject(contract_subject), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Polls `query` (run as superuser on the test database) until it
    /// returns `want` or [`WAIT`] passes; returns the last value.
    pub async fn wait_for_count(&self, query: &str, want: i64) -> i64 {
        self.db.wait_for_count(query, want, WAIT).await
    }

    /// Waits until the worker has handled everything published so far, so
    /// that what the database holds is every effect there will be.
    pub async fn drained(&self) {
        self.nats.drained(WAIT).await;
    }

    /// Gates `role` in `guild`'s community on an ERC-20 balance of at least
    /// `min_balance` on `contract` (chain `testchain`); returns the community.
    pub async fn gate_role(
        &self,
        guild: impl AsId<GuildMarker>,
        contract: &str,
        role: impl AsId<RoleMarker>,
        min_balance: &str,
    ) -> store::TenantId {
        testkit::fixtures::gate_role(&self.store, guild.id(), contract, role.id(), min_balance)
            .await
    }

    /// Waits until `members` profiles exist, then checks each `member.joined`
    /// took effect exactly once (counted once every redelivery was handled).
    pub async fn assert_each_join_applied_once(&self, members: u64) {
        let members = members as i64;
        assert_eq!(
            self.wait_for_count("SELECT count(*) FROM profiles", members)
                .await,
            members,
            "joins lost"
        );
        self.drained().await;
        assert_eq!(
            self.count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
                .await,
            members,
            "an event took effect twice or not at all"
        );
    }

    pub async fn count(&self, query: &str) -> i64 {
        self.db.count(query).await
    }

    /// Dead letters stored so far: (subject, reason header).
    /// Eligibility checks requested so far (the stream keeps them).
    pub async fn checks_requested(&self) -> Vec<wire::check::EligibilityCheck> {
        let name = self.nats.ns.stream_name(&wire::subjects::ELIGIBILITY);
        let mut stream = self.nats.js.get_stream(&name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut checks = Vec::new();
        if state.messages == 0 {
            return checks;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                checks.push(wire::check::EligibilityCheck::from_json(&message.payload).unwrap());
            }
        }
        checks
    }

    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        use futures::StreamExt;
        let stream_name = self.nats.ns.stream_name(&wire::subjects::DEAD_LETTER);
        let stream = self.nats.js.get_stream(&stream_name).await.unwrap();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            let reason = m
                .headers
                .as_ref()
                .and_then(|h| h.get(wire::subjects::headers::DEAD_LETTER_REASON))
                .map(std::string::ToString::to_string)
                .unwrap_or_default();
            out.push((m.subject.to_string(), reason));
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Before the namespace's streams are deleted under it.
        self.kill_worker();
    }
}

/// A Discord id in a test: a literal number, or an id the simulator made.
pub trait AsId<M> {
    fn id(self) -> Id<M>;
}

impl<M> AsId<M> for u64 {
    fn id(self) -> Id<M> {
        Id::new(self).expect("test ids are not 0")
    }
}

impl<M> AsId<M> for Id<M> {
    fn id(self) -> Id<M> {
        self
    }
}

pub fn guild_join(guild: impl AsId<GuildMarker>, session: &str, seq: u64) -> Envelope {
    let guild = guild.id();
    Envelope::for_dispatch(
        0,
        session,
        seq,
        1_700_000_000_000,
        Payload::GuildJoin(payload::GuildJoin {
            name: format!("Guild {guild}"),
            member_count: Some(10),
            owner_id: None,
        }),
    )
    .with_guild(guild)
}

pub fn member_join(
    guild: impl AsId<GuildMarker>,
    user: impl AsId<UserMarker>,
    session: &str,
    seq: u64,
) -> Envelope {
    member_join_with_roles(guild, user, session, seq, vec![5u64.id()])
}

pub fn member_join_with_roles(
    guild: impl AsId<GuildMarker>,
    user: impl AsId<UserMarker>,
    session: &str,
    seq: u64,
    roles: Vec<RoleId>,
) -> Envelope {
    let (guild, user) = (guild.id(), user.id());
    Envelope::for_dispatch(
        0,
        session,
        seq,
        1_700_000_000_000 + seq as i64,
        Payload::MemberJoin(payload::MemberJoin {
            username: format!("user{user}"),
            roles,
            joined_at: Some(1_700_000_000_000),
            ..Default::default()
        }),
    )
    .with_guild(guild)
    .with_user(user)
}

pub fn member_leave(
    guild: impl AsId<GuildMarker>,
    user: impl AsId<UserMarker>,
    session: &str,
    seq: u64,
) -> Envelope {
    let (guild, user) = (guild.id(), user.id());
    Envelope::for_dispatch(
        0,
        session,
        seq,
        1_700_000_000_000 + seq as i64,
        Payload::MemberLeave(payload::MemberLeave {
            username: format!("user{user}"),
        }),
    )
    .with_guild(guild)
    .with_user(user)
}

/// A guild in the simulator whose members have joined (as the gateway would
/// publish it), a token rule on `contract` (balance ≥ 10) gating
/// `role_ids[1]`, and a worker syncing roles through the simulator with
/// `grace` against a fake chain.
pub struct GatedGuild {
    pub sim: discord_sim::Simulator,
    pub chain: eligibility::fake_chain::FakeChain,
    pub h: Harness,
    pub guild: GuildId,
    pub gated: RoleId,
    pub members: Vec<UserId>,
    pub tenant: store::TenantId,
}

/// What a [`GatedGuild`] is started with besides its members.
#[derive(Clone, Debug, Default)]
pub struct GuildOptions {
    pub grace: Duration,
    /// The worker's `public_site` (where wallet-link pages are served).
    pub public_site: Option<domain::wallets::Site>,
    /// The fake chain's id, configured for the worker too; `None`: the fake
    /// chain's default, not configured (as `CHAINS` does not).
    pub chain_id: Option<u64>,
    /// Slash command limits; `None`: the harness's generous ones.
    pub commands: Option<worker::CommandLimits>,
}

impl GatedGuild {
    pub async fn start(label: &str, contract: &str, members: usize, grace: Duration) -> GatedGuild {
        Self::start_with(
            label,
            contract,
            members,
            GuildOptions {
                grace,
                ..GuildOptions::default()
            },
        )
        .await
    }

    pub async fn start_with(
        label: &str,
        contract: &str,
        members: usize,
        options: GuildOptions,
    ) -> GatedGuild {
        Self::start_pacing_roles(label, contract, members, options, Default::default()).await
    }

    /// As [`GatedGuild::start_with`], with role changes paced by `discord`.
    pub async fn start_pacing_roles(
        label: &str,
        contract: &str,
        members: usize,
        options: GuildOptions,
        discord: worker::discord::RoleChangeLimits,
    ) -> GatedGuild {
        use discord_sim::{GuildsSpec, SimConfig, Simulator};
        use eligibility::fake_chain::{FakeChain, FakeChainOptions, FakeContract};
        let sim = Simulator::start(SimConfig {
            token: "test-token".into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let guild = sim.control().create_guilds(&GuildsSpec {
            count: 1,
            members_per_guild: members,
            roles_per_guild: 2,
        })[0];
        // role_ids[0] is @everyone, which cannot be granted.
        let gated = sim.control().guild(guild).unwrap().role_ids[1];
        let users = testkit::sim::member_ids(&sim, guild);
        let chain = match options.chain_id {
            Some(chain_id) => FakeChain::start_with(FakeChainOptions {
                chain_id,
                ..FakeChainOptions::default()
            })
            .await
            .unwrap(),
            None => FakeChain::start().await.unwrap(),
        };
        chain.deploy(contract.parse().unwrap(), FakeContract::Erc20);
        let mut h = Harness::new(label).await;
        h.config.public_site = options.public_site;
        if let Some(commands) = options.commands {
            h.config.commands = commands;
        }
        h.config.discord = discord;
        h.enable_role_sync_on(
            &sim.api_url(),
            chain.url(),
            options.chain_id,
            domain::role_sync::RoleSyncConfig {
                grace: options.grace,
                recheck_period: Duration::from_secs(3600),
                scan_interval: Duration::from_secs(3600),
                scan_batch: 100,
                // Tests change a balance and expect the next check to see it.
                check_min_read_age: Duration::ZERO,
            },
        );
        h.start_worker();
        h.publish(&guild_join(guild, "s", 1)).await;
        assert_eq!(
            h.wait_for_count("SELECT count(*) FROM communities", 1)
                .await,
            1
        );
        let tenant = h.gate_role(guild, contract, gated, "10").await;
        for (i, user) in users.iter().enumerate() {
            h.publish(&member_join_with_roles(
                guild,
                *user,
                "s",
                10 + i as u64,
                vec![],
            ))
            .await;
        }
        assert_eq!(
            h.wait_for_count("SELECT count(*) FROM profiles", members as i64)
                .await,
            members as i64
        );
        GatedGuild {
            sim,
            chain,
            h,
            guild,
            gated,
            members: users,
            tenant,
        }
    }
}
