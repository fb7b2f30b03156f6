//! Issue 13: the database side of "nothing lost". Member events flow from
//! the simulator through the real gateway and JetStream to the real worker,
//! whose store reaches PostgreSQL through PgBouncer (transaction pooling);
//! mid-stream PgBouncer is killed, or PostgreSQL restarted, and started
//! again. Every event must still be applied exactly once in effect: the
//! worker's failed transactions are retried, never dead-lettered, and a
//! commit whose answer was lost is recognised when the event comes again.
//!
//! Each test owns what it breaks: a private PgBouncer (and for the second a
//! private PostgreSQL cluster) and a private NATS server, so the stack's
//! services, shared by every test running, are never touched.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::{Namespace, Process, Topology};
use discord_sim::{GuildsSpec, SimConfig, TrafficMix, TrafficRun, TrafficSpec};
use testkit::nats::{stream_len, NatsServer};
use testkit::pgbouncer::PgBouncer;
use testkit::postgres::{PgCluster, StopMode};
use testkit::TestDb;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "database-restart-token";
const SHARDS: u32 = 2;
const GUILDS: usize = 4;
const EVENTS: u64 = 3_000;
/// Six seconds of traffic: long enough for an outage to fall inside it
/// with events on both sides, short enough for a 2-core machine.
const RATE: f64 = 500.0;
/// Events JetStream must accept while the database path is down: proof
/// that the outage lasted while events kept coming, so some were in flight
/// (accepted, not yet applied) when it ended.
const DURING_OUTAGE: u64 = 250;
/// For anything that depends on the services recovering.
const WAIT: Duration = Duration::from_secs(60);

/// Both tests load both cores (simulator, gateway, worker, PostgreSQL);
/// side by side each would take twice as long, and where in the traffic
/// the outage lands would be left to chance.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_apply_exactly_once_across_a_crash_of_pgbouncer() {
    let _alone = ONE_AT_A_TIME.lock().await;
    show_logs();
    let db = TestDb::create("pgbouncer_crash").await;
    let mut bouncer = PgBouncer::start().await;
    let run = Pipeline::start(bouncer.store(&db, 8).await).await;
    run.provisioned(&db).await;
    let traffic = run.traffic();

    run.applied_at_least(&db, EVENTS / 3).await;
    let before = stream_len(&run.nats.access(), "EVENTS").await;
    // Every connection the worker holds breaks, mid-transaction for some
    // (a COMMIT may be applied with its answer lost); new ones are refused
    // until PgBouncer is back.
    bouncer.kill().await;
    run.stored_at_least(before + DURING_OUTAGE, "with PgBouncer down")
        .await;
    assert_traffic_continues(&traffic);
    bouncer.restart().await;

    run.finish(&db, traffic).await;
    // The worker tried events while PgBouncer was down (they kept coming):
    // each refused one was handed back and came again.
    assert!(
        run.redeliveries().await > 0,
        "no event was delivered twice: the crash did not touch the worker\n{}",
        bouncer.log()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_apply_exactly_once_across_a_restart_of_postgres() {
    let _alone = ONE_AT_A_TIME.lock().await;
    show_logs();
    let postgres = PgCluster::start().await;
    let db = postgres.create_db("postgres_restart").await;
    // PgBouncer's default `server_login_retry` (15 s; the deployed file
    // keeps it) would refuse or hold every query for up to 15 s after
    // PostgreSQL is back. Its refusals are what this test is about, not
    // sitting them out: 1 s brings the same errors in a shorter window.
    let bouncer = PgBouncer::start_with(
        postgres.port(),
        &postgres.env().app_password,
        &[("server_login_retry", "1")],
    )
    .await;
    let run = Pipeline::start(bouncer.store(&db, 8).await).await;
    run.provisioned(&db).await;
    let started_at = postmaster_start(&db).await;
    let traffic = run.traffic();

    run.applied_at_least(&db, EVENTS / 3).await;
    let before = stream_len(&run.nats.access(), "EVENTS").await;
    // A fast stop ends every session (57P01), rolling back what was in
    // flight; PgBouncer stays up, and until the start its logins fail.
    postgres.stop(StopMode::Fast).await;
    run.stored_at_least(before + DURING_OUTAGE, "with PostgreSQL down")
        .await;
    assert_traffic_continues(&traffic);
    postgres.start_server().await;
    assert_ne!(
        postmaster_start(&db).await,
        started_at,
        "PostgreSQL did not restart:\n{}",
        postgres.log()
    );

    run.finish(&db, traffic).await;
    run.stop().await;
}

/// `RUST_LOG=worker=info` shows every retry with its reason: what to read
/// when a run fails. Without it, errors only.
fn show_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// When the server process started: a restart changes it.
async fn postmaster_start(db: &TestDb) -> String {
    db.admin()
        .await
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .expect("reading the postmaster's start time")
        .get(0)
}

/// The traffic has events left to send: the database comes back while
/// events still arrive, not only to a backlog.
fn assert_traffic_continues(traffic: &TrafficRun) {
    assert!(
        traffic.progress.emitted.load(Ordering::Relaxed) < EVENTS,
        "the traffic ended before the database came back; the restart would prove less"
    );
}

/// The simulator, the gateway, a private NATS and the worker, wired as in
/// production.
struct Pipeline {
    nats: NatsServer,
    sim: discord_sim::Simulator,
    guilds: Vec<wire::GuildId>,
    topology: Topology,
    gateway: gateway::Gateway,
    worker: tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
    shutdown: CancellationToken,
}

impl Pipeline {
    async fn start(store: store::Store) -> Pipeline {
        let nats = NatsServer::start();
        let topology = Topology::new(Namespace::root()).with_max_age(Duration::from_secs(3600));
        let sim = testkit::sim::start(SimConfig {
            // Every frame of both shards stays inspectable for the final check.
            transcript_limit: 50_000,
            ..testkit::sim::fast_config(TOKEN)
        })
        .await;
        let guilds = sim.control().create_guilds(&GuildsSpec {
            count: GUILDS,
            members_per_guild: 0,
            roles_per_guild: 3,
        });
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(worker::run(
            worker_config(&topology),
            nats.access().jetstream(Process::Worker).await,
            store,
            None,
            shutdown.clone(),
        ));
        let gateway = common::start_gateway(&sim, &nats.access(), &topology, TOKEN, SHARDS).await;
        Pipeline {
            nats,
            sim,
            guilds,
            topology,
            gateway,
            worker,
            shutdown,
        }
    }

    /// Every guild became a community: the worker reaches the database.
    async fn provisioned(&self, db: &TestDb) {
        let communities = db
            .wait_for_count("SELECT count(*) FROM communities", GUILDS as i64, WAIT)
            .await;
        assert_eq!(communities, GUILDS as i64, "communities provisioned");
    }

    fn traffic(&self) -> TrafficRun {
        self.sim.control().start_traffic(TrafficSpec {
            events: EVENTS,
            rate_per_second: Some(RATE),
            mix: TrafficMix {
                member_join: 3,
                member_leave: 1,
                member_update: 4,
                interaction: 0,
            },
            guilds: self.guilds.clone(),
            seed: 13,
            ..TrafficSpec::default()
        })
    }

    /// Waits until `member_events` of the traffic are applied (claimed in
    /// `processed_events`, besides the guild joins).
    async fn applied_at_least(&self, db: &TestDb, member_events: u64) {
        let want = GUILDS as i64 + member_events as i64;
        testkit::eventually(
            &format!("{member_events} member events applied"),
            WAIT,
            || async { db.count("SELECT count(*) FROM processed_events").await >= want },
        )
        .await;
    }

    async fn stored_at_least(&self, events: u64, while_: &str) {
        let access = self.nats.access();
        testkit::eventually(
            &format!("{events} events in EVENTS {while_}"),
            WAIT,
            || async { stream_len(&access, "EVENTS").await >= events },
        )
        .await;
    }

    /// Lets the traffic end, then checks that every event reached JetStream
    /// once and the database exactly once in effect.
    async fn finish(&self, db: &TestDb, traffic: TrafficRun) {
        let report = traffic.wait().await;
        assert_eq!(report.emitted, EVENTS);
        let nats = self.nats.access();

        common::assert_applied_exactly_once(
            db,
            &self.sim,
            &nats,
            &self.topology.namespace,
            SHARDS,
            EVENTS,
            &self.guilds,
        )
        .await;
    }

    /// Deliveries of EVENTS beyond the first of each message: events whose
    /// handling failed and that JetStream handed out again.
    async fn redeliveries(&self) -> u64 {
        let js = self.nats.access().jetstream(Process::Admin).await;
        let durable = worker_config(&self.topology)
            .consumer()
            .durable_name(&self.topology.namespace, &wire::subjects::EVENTS);
        let info = js
            .get_stream("EVENTS")
            .await
            .expect("the EVENTS stream")
            .consumer_info(&durable)
            .await
            .expect("the worker's consumer");
        info.delivered.consumer_sequence - info.delivered.stream_sequence
    }

    async fn stop(self) {
        let summary = self
            .gateway
            .shutdown()
            .await
            .expect("the gateway stops cleanly");
        assert_eq!(summary.publish.abandoned, 0);
        self.shutdown.cancel();
        self.worker
            .await
            .expect("the worker task")
            .expect("the worker stops cleanly");
        self.sim.shutdown().await;
    }
}

/// The worker's own retry policy (backoff, attempts, ack wait): an outage
/// it does not ride out with these would dead-letter in production too.
fn worker_config(topology: &Topology) -> worker::WorkerConfig {
    worker::WorkerConfig {
        topology: topology.clone(),
        concurrency: 8,
        ..worker::WorkerConfig::default()
    }
}
