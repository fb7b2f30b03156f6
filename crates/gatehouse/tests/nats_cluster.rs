//! Issue 13: Gatehouse on a clustered JetStream. Three nats-servers on
//! loopback, every stream and bucket with three replicas; the simulator
//! sends ten thousand member events through the real gateway to the real
//! worker, and while they flow the node leading the EVENTS stream is killed
//! and later restarted. Nothing may be lost or doubled: JetStream holds
//! each event once, and the worker applied each once in effect.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bus::{Namespace, Process, Topology};
use discord_sim::{GuildsSpec, SimConfig, TrafficMix, TrafficSpec};
use testkit::nats::{stream_len, NatsAccess};
use testkit::nats_cluster::NatsCluster;
use testkit::TestDb;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "cluster-test-token";
const NODES: usize = 3;
const SHARDS: u32 = 2;
const GUILDS: usize = 6;
const EVENTS: u64 = 10_000;
/// Fast enough to finish in well under a minute, slow enough that the
/// traffic outlasts the failover (2.9 elects a new leader 4 to 9 s after
/// the old one dies) and the restart.
const RATE: f64 = 500.0;
/// For anything that depends on the cluster recovering.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_apply_exactly_once_across_a_crash_of_the_events_leader() {
    let mut cluster = NatsCluster::start(NODES);
    cluster.ready(WAIT).await;
    let nats = cluster.access();
    let db = TestDb::create("nats_cluster").await;
    let store = db.store(8).await;
    let topology = Topology::new(Namespace::root())
        .with_replicas(NODES)
        .with_max_age(Duration::from_secs(3600));

    let sim = testkit::sim::start(SimConfig {
        // Every frame of both shards stays inspectable for the final check.
        transcript_limit: 50_000,
        ..testkit::sim::fast_config(TOKEN)
    })
    .await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: GUILDS,
        members_per_guild: 0,
        roles_per_guild: 3,
    });

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(worker::run(
        worker_config(&topology),
        nats.jetstream(Process::Worker).await,
        store.clone(),
        None,
        shutdown.clone(),
    ));
    let gateway = common::start_gateway(&sim, &nats, &topology, TOKEN, SHARDS).await;
    db.wait_for_count("SELECT count(*) FROM communities", GUILDS as i64, WAIT)
        .await;
    // A worker opens this bucket only when it talks to Discord, which this
    // one does not; opened here as such a worker would, to be checked too.
    bus::open_discord_budget_bucket(&nats.jetstream(Process::Worker).await, &topology)
        .await
        .expect("the Discord budget bucket");
    assert_replicated(&nats, NODES).await;

    let traffic = control.start_traffic(TrafficSpec {
        events: EVENTS,
        rate_per_second: Some(RATE),
        mix: TrafficMix {
            member_join: 3,
            member_leave: 1,
            member_update: 4,
            interaction: 0,
        },
        guilds: guilds.clone(),
        seed: 13,
        ..TrafficSpec::default()
    });

    // Crash the node that leads EVENTS and the worker's consumer on it, with
    // a fifth of the traffic stored: the publishes it had not acknowledged
    // must be retried elsewhere, the deliveries whose acks it lost come
    // again, and nothing it had replicated may come back twice.
    testkit::eventually("a fifth of the events in EVENTS", WAIT, || async {
        stream_len(&nats, "EVENTS").await >= EVENTS / 5
    })
    .await;
    let durable = worker_config(&topology)
        .consumer()
        .durable_name(&topology.namespace, &wire::subjects::EVENTS);
    let leader = cluster.lead_together("EVENTS", &durable, WAIT).await;
    let before_kill = stream_len(&nats, "EVENTS").await;
    cluster.kill(leader);
    testkit::eventually("another node to lead EVENTS", WAIT, || async {
        cluster
            .stream_leader("EVENTS")
            .await
            .is_some_and(|now| now != leader)
    })
    .await;
    // Two of three replicas are a quorum: events keep being stored.
    testkit::eventually("EVENTS to grow with a node down", WAIT, || async {
        stream_len(&nats, "EVENTS").await >= before_kill + EVENTS / 10
    })
    .await;
    assert!(
        traffic
            .progress
            .emitted
            .load(std::sync::atomic::Ordering::Relaxed)
            < EVENTS,
        "the traffic ended before the node came back; the restart would prove less"
    );
    cluster.restart(leader);

    let report = traffic.wait().await;
    assert_eq!(report.emitted, EVENTS);
    cluster.caught_up("EVENTS", WAIT).await;

    common::assert_applied_exactly_once(
        &db,
        &sim,
        &nats,
        &topology.namespace,
        SHARDS,
        EVENTS,
        &guilds,
    )
    .await;

    // The crash was felt where it matters: publishes failed and were
    // retried (with no leader for seconds, some must have).
    assert!(
        publish_errors(&gateway).await > 0,
        "no publish failed: the crash did not touch the gateway"
    );
    let summary = gateway.shutdown().await.expect("the gateway stops cleanly");
    assert_eq!(summary.publish.abandoned, 0);
    shutdown.cancel();
    worker
        .await
        .expect("the worker task")
        .expect("the worker stops cleanly");
    sim.shutdown().await;
}

/// Failed publish attempts the gateway counted, of every kind.
async fn publish_errors(gateway: &gateway::Gateway) -> u64 {
    let (status, metrics) = testkit::http::get(gateway.http_addr(), "/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .filter(|l| l.starts_with("gateway_publish_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn worker_config(topology: &Topology) -> worker::WorkerConfig {
    worker::WorkerConfig {
        topology: topology.clone(),
        concurrency: 8,
        backoff: vec![Duration::from_millis(100)],
        // Acks lost with a crashed consumer leader come back after this;
        // the claim in `processed_events` makes the second delivery a no-op.
        ack_wait: Duration::from_secs(3),
        ..worker::WorkerConfig::default()
    }
}

/// Every stream the processes made, the buckets' included, keeps `replicas`
/// copies on as many nodes.
async fn assert_replicated(nats: &NatsAccess, replicas: usize) {
    use futures::StreamExt;
    let js = nats.jetstream(Process::Admin).await;
    let names: BTreeSet<String> = js
        .stream_names()
        .map(|n| n.expect("a stream name"))
        .collect()
        .await;
    for want in [
        "EVENTS",
        "COMMANDS",
        "ELIGIBILITY",
        "WEBHOOKS",
        "DEAD_LETTER",
        "KV_GATEWAY_SESSIONS",
        "KV_DISCORD_BUDGET",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    for name in &names {
        let info = js
            .get_stream(name)
            .await
            .expect("stream info")
            .cached_info()
            .clone();
        assert_eq!(info.config.num_replicas, replicas, "{name}");
        let peers = info.cluster.expect("cluster info");
        assert_eq!(peers.replicas.len() + 1, replicas, "{name}: {peers:?}");
    }
}
