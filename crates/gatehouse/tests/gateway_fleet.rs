//! Several `gatehouse gateway` processes sharing one bot's shards through
//! leases in NATS KV: overlapping configurations never run a shard twice, a
//! clean stop hands shards over with their sessions, a killed process's
//! shards are resumed by the survivor, and identifies are paced across
//! processes.
//!
//! "Never ran twice" is read from the simulator, which sees every
//! connection: each shard has exactly one session (one IDENTIFY) over the
//! whole test, every later connection a RESUME of it. A second process
//! running a shard would have to identify (it has no session), and that
//! second session would publish every event again under other envelope ids.

#[path = "common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use discord_sim::{GuildsSpec, ShardEvent, SimConfig, Simulator, TrafficMix, TrafficSpec};
use process::{finish, free_addr, gateway, held, kill, launch, sigterm, until_running, WAIT};
use testkit::nats::{stream_len, NatsServer};
use testkit::sim::assert_exactly_once;

const TOKEN: &str = "fleet-test-token-5ecret";
const TOTAL: u32 = 4;

async fn simulator() -> Simulator {
    let sim = testkit::sim::start(SimConfig {
        shard_count: TOTAL,
        ..testkit::sim::fast_config(TOKEN)
    })
    .await;
    sim.control().create_guilds(&GuildsSpec {
        count: 12,
        members_per_guild: 3,
        roles_per_guild: 1,
    });
    sim
}

/// Member events at 200/s into every guild (so every shard), going on
/// across whatever the test does to the gateways.
fn traffic(sim: &Simulator, events: u64) -> discord_sim::TrafficRun {
    let control = sim.control();
    let guilds = control.guilds().into_iter().map(|g| g.id).collect();
    control.start_traffic(TrafficSpec {
        events,
        rate_per_second: Some(200.0),
        mix: TrafficMix {
            member_join: 2,
            member_leave: 1,
            member_update: 2,
            interaction: 0,
        },
        guilds,
        ..TrafficSpec::default()
    })
}

/// How many events `run` has sent so far.
fn sent_so_far(run: &discord_sim::TrafficRun) -> impl Fn() -> u64 + Clone + Send + 'static {
    let progress = std::sync::Arc::clone(&run.progress);
    move || progress.emitted.load(std::sync::atomic::Ordering::Relaxed)
}

/// Two processes that may both run every shard: the first holds them all,
/// the second stands by.
async fn holder_and_standby(
    sim: &Simulator,
    nats: &NatsServer,
) -> [(process::Running, SocketAddr); 2] {
    let (a, a_addr) = start(sim, nats, "0-3");
    until_running(a_addr, "first", &[0, 1, 2, 3]).await;
    let (b, b_addr) = start(sim, nats, "0-3");
    until_running(b_addr, "standby", &[]).await;
    [(a, a_addr), (b, b_addr)]
}

/// A gateway on `shards` of the 4, with its health address.
fn start(sim: &Simulator, nats: &NatsServer, shards: &str) -> (process::Running, SocketAddr) {
    let addr = free_addr();
    let running = launch(gateway(
        sim,
        nats,
        TOKEN,
        &[
            ("SHARDS", shards),
            ("TOTAL_SHARDS", "4"),
            ("HTTP_ADDR", &addr.to_string()),
        ],
    ));
    (running, addr)
}

/// Every shard had one session over the whole test: identified once,
/// resumed on every later connection, never refused a resume.
fn assert_one_session_per_shard(sim: &Simulator, resumed: &[u32]) {
    for shard in 0..TOTAL {
        let t = sim.control().transcript(shard);
        assert_eq!(
            t.identifies, 1,
            "shard {shard} had {} sessions: {:?}",
            t.identifies, t.events
        );
        let resumes = t
            .events
            .iter()
            .filter(|e| matches!(e, ShardEvent::Resumed { .. }))
            .count();
        assert!(
            !resumed.contains(&shard) || resumes > 0,
            "shard {shard} was handed over but not resumed: {:?}",
            t.events
        );
        assert!(
            !t.events
                .iter()
                .any(|e| matches!(e, ShardEvent::ResumeRefused { .. })),
            "shard {shard}: {:?}",
            t.events
        );
    }
}

/// Samples both processes' shards until `done`, failing if a shard is ever
/// reported by both at once.
async fn never_both(a: SocketAddr, b: SocketAddr, done: impl Fn() -> bool) -> usize {
    let mut samples = 0;
    while !done() {
        if let (Some(x), Some(y)) = (held(a).await, held(b).await) {
            let both: Vec<_> = x.keys().filter(|id| y.contains_key(id)).collect();
            assert!(both.is_empty(), "shards {both:?} run in both processes");
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ranges_never_run_a_shard_twice_and_a_clean_stop_hands_shards_over() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let (a, a_addr) = start(&sim, &nats, "0-2");
    until_running(a_addr, "first", &[0, 1, 2]).await;
    // B asks for 1-3: only 3 is free.
    let (b, b_addr) = start(&sim, &nats, "1-3");
    until_running(b_addr, "second", &[3]).await;
    let stream = traffic(&sim, 1200);
    let emitted = sent_so_far(&stream);
    let sampled = {
        let emitted = emitted.clone();
        tokio::spawn(async move { never_both(a_addr, b_addr, || emitted() >= 1200).await })
    };
    testkit::eventually("300 events sent", WAIT, || async { emitted() >= 300 }).await;

    // A stops cleanly: B takes 1 and 2 (in its range) and resumes them;
    // shard 0 waits for A's restart.
    sigterm(&a);
    let (code, a_output) = finish(a, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{a_output}");
    until_running(b_addr, "second", &[1, 2, 3]).await;
    let (a2, a2_addr) = start(&sim, &nats, "0-2");
    until_running(a2_addr, "restarted first", &[0]).await;

    let report = stream.wait().await;
    assert!(report.emitted >= 1200, "{report:?}");
    let samples = sampled.await.expect("sampling ran");
    assert!(samples > 10, "only {samples} samples of both processes");
    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..TOTAL, "").await;
    assert_one_session_per_shard(&sim, &[0, 1, 2]);

    let output = stop_all([b, a2]).await;
    assert!(!output.contains(TOKEN), "the token leaked into the logs");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_processes_loses_and_duplicates_nothing() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let [(a, _), (b, b_addr)] = holder_and_standby(&sim, &nats).await;
    let stream = traffic(&sim, 1500);
    let emitted = sent_so_far(&stream);
    testkit::eventually("200 events sent", WAIT, || async { emitted() >= 200 }).await;

    // Restart A: its shards move to B at once (handed over, not expired).
    sigterm(&a);
    let stopped = Instant::now();
    let (code, output) = finish(a, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{output}");
    until_running(b_addr, "second", &[0, 1, 2, 3]).await;
    let handover = stopped.elapsed();
    let (a2, a2_addr) = start(&sim, &nats, "0-3");
    until_running(a2_addr, "restarted first", &[]).await;
    let at = emitted();
    testkit::eventually("200 more events sent", WAIT, || async {
        emitted() >= at + 200
    })
    .await;

    // Restart B: everything moves back.
    sigterm(&b);
    let (code, output) = finish(b, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{output}");
    until_running(a2_addr, "restarted first", &[0, 1, 2, 3]).await;
    let (b2, b2_addr) = start(&sim, &nats, "0-3");
    until_running(b2_addr, "restarted second", &[]).await;

    let report = stream.wait().await;
    assert!(report.emitted >= 1500, "{report:?}");
    let stored = assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..TOTAL, "").await;
    assert_one_session_per_shard(&sim, &[0, 1, 2, 3]);
    eprintln!(
        "rolling restart: {} events in EVENTS, each once; shards handed over in {handover:?} (stop included)",
        stored.len()
    );
    stop_all([a2, b2]).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_has_its_shards_resumed_by_the_survivor_with_the_gap_replayed_once() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let [(a, _), (b, b_addr)] = holder_and_standby(&sim, &nats).await;
    let stream = traffic(&sim, 1500);
    let emitted = sent_so_far(&stream);
    let access = nats.access();
    testkit::eventually("300 events published", WAIT, || async {
        stream_len(&access, "EVENTS").await >= 300
    })
    .await;

    let output = kill(a).await;
    let killed = Instant::now();
    let at_kill = emitted();
    until_running(b_addr, "survivor", &[0, 1, 2, 3]).await;
    let takeover = killed.elapsed();
    let gap = emitted() - at_kill;

    let report = stream.wait().await;
    assert!(report.emitted >= 1500, "{report:?}");
    let stored = assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..TOTAL, "").await;
    assert_one_session_per_shard(&sim, &[0, 1, 2, 3]);
    let ttl = Duration::from_secs(2);
    // A whole TTL after the last renewal the standby saw, which came at
    // most a quarter TTL before the kill.
    assert!(
        takeover >= ttl * 3 / 4 && takeover < ttl + Duration::from_secs(5),
        "took {takeover:?} to take over with a {ttl:?} lease"
    );
    assert!(gap > 0, "no event was sent while nobody ran the shards");
    eprintln!(
        "SIGKILL: shards taken over and resumed in {takeover:?} (lease TTL {ttl:?}); {gap} events sent in the gap; {} events in EVENTS, each once",
        stored.len()
    );
    assert!(!output.contains(TOKEN));
    stop_all([b]).await;
    sim.shutdown().await;
}

/// Two processes started together on shards 0 and 1 of a simulator set up
/// by `config`, identifying through Discord's limits (the shared queue).
async fn two_identifying(
    config: SimConfig,
) -> (Simulator, NatsServer, [(process::Running, SocketAddr); 2]) {
    let sim = testkit::sim::start(SimConfig {
        shard_count: 2,
        ..config
    })
    .await;
    sim.control().create_guilds(&GuildsSpec {
        count: 4,
        members_per_guild: 1,
        roles_per_guild: 1,
    });
    let nats = NatsServer::start();
    let launch_on = |shard: &str| {
        let addr = free_addr();
        let running = launch(gateway(
            &sim,
            &nats,
            TOKEN,
            &[
                ("SHARDS", shard),
                ("IDENTIFY_QUEUE", "discord"),
                ("HTTP_ADDR", &addr.to_string()),
            ],
        ));
        (running, addr)
    };
    let gateways = [launch_on("0"), launch_on("1")];
    (sim, nats, gateways)
}

/// SIGTERM, and each exits 0; returns what they printed.
async fn stop_all(gateways: impl IntoIterator<Item = process::Running>) -> String {
    let mut outputs = String::new();
    for running in gateways {
        sigterm(&running);
        let (code, output) = finish(running, Duration::from_secs(15)).await;
        assert_eq!(code, Some(0), "{output}");
        outputs += &output;
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifies_of_two_processes_are_paced_by_one_shared_queue() {
    // Discord's rule, as the simulator enforces it: one identify per 5 s
    // in the one bucket; a faster one is refused with an invalid session.
    let (sim, _nats, [(a, a_addr), (b, b_addr)]) = two_identifying(SimConfig {
        max_concurrency: 1,
        identify_interval_ms: 5_000,
        ..testkit::sim::fast_config(TOKEN)
    })
    .await;
    // Started together, each with its own shard: only the shared queue
    // keeps the second identify 5 s behind the first.
    until_running(a_addr, "first", &[0]).await;
    until_running(b_addr, "second", &[1]).await;
    for shard in 0..2 {
        let t = sim.control().transcript(shard);
        let limited = t
            .events
            .iter()
            .any(|e| matches!(e, ShardEvent::IdentifyRateLimited { .. }));
        assert!(
            !limited && t.identifies == 1,
            "shard {shard} identified too fast: {:?}",
            t.events
        );
    }
    stop_all([a, b]).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_session_start_limit_is_counted_across_processes() {
    // One session start left for the day. Each process reads "1 remaining"
    // from /gateway/bot; only the shared count keeps the second from
    // spending it again.
    let (sim, _nats, [(a, a_addr), (b, b_addr)]) = two_identifying(SimConfig {
        session_start_total: 1,
        ..testkit::sim::fast_config(TOKEN)
    })
    .await;
    testkit::eventually("one of the two shards active", WAIT, || async {
        let a = held(a_addr).await.unwrap_or_default();
        let b = held(b_addr).await.unwrap_or_default();
        a.values().chain(b.values()).any(|phase| phase == "active")
    })
    .await;
    // A check that something does *not* happen needs a window. The two
    // shards are in different identify buckets, so nothing else holds the
    // second back: without the shared count it identifies at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let identifies: u64 = (0..2).map(|s| sim.control().transcript(s).identifies).sum();
    assert_eq!(identifies, 1, "the limit allowed one session start");
    let outputs = stop_all([a, b]).await;
    assert!(
        outputs.contains("session-start limit is used up"),
        "{outputs}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_nats_stops_its_shards_before_another_takes_them() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    // The holder reaches NATS through a forwarder the test can cut: a
    // partition of that process alone, while the standby still gets through.
    let nats_port = nats
        .access()
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the server's port");
    let cut = testkit::cut::Cut::to(std::net::SocketAddr::from(([127, 0, 0, 1], nats_port))).await;
    let a_addr = free_addr();
    let a = launch(gateway(
        &sim,
        &nats,
        TOKEN,
        &[
            ("SHARDS", "0-3"),
            ("TOTAL_SHARDS", "4"),
            ("HTTP_ADDR", &a_addr.to_string()),
            ("NATS_URL", &format!("nats://{}", cut.addr)),
        ],
    ));
    until_running(a_addr, "holder", &[0, 1, 2, 3]).await;
    let (b, b_addr) = start(&sim, &nats, "0-3");
    until_running(b_addr, "standby", &[]).await;
    let stream = traffic(&sim, 1200);
    let access = nats.access();
    testkit::eventually("300 events published", WAIT, || async {
        stream_len(&access, "EVENTS").await >= 300
    })
    .await;

    cut.cut().await;
    let cut_at = Instant::now();
    // The holder gives its shards up on its own (it cannot renew), and the
    // standby takes them only after that: the holder's last shard stops
    // before the standby's first starts.
    let mut holder_stopped = None;
    let mut standby_started = None;
    while holder_stopped.is_none() || standby_started.is_none() {
        assert!(
            cut_at.elapsed() < Duration::from_secs(15),
            "holder stopped {holder_stopped:?}, standby started {standby_started:?}"
        );
        if holder_stopped.is_none() && held(a_addr).await.is_some_and(|h| h.is_empty()) {
            holder_stopped = Some(cut_at.elapsed());
        }
        if standby_started.is_none() && held(b_addr).await.is_some_and(|h| !h.is_empty()) {
            standby_started = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stopped, started) = (
        holder_stopped.unwrap_or_default(),
        standby_started.unwrap_or_default(),
    );
    assert!(
        stopped < started,
        "the standby started at {started:?}, before the holder stopped at {stopped:?}"
    );
    until_running(b_addr, "standby", &[0, 1, 2, 3]).await;
    let report = stream.wait().await;
    assert!(report.emitted >= 1200, "{report:?}");
    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..TOTAL, "").await;
    assert_one_session_per_shard(&sim, &[0, 1, 2, 3]);
    eprintln!("partition: the holder stopped its shards {stopped:?} after the cut, the standby started them {started:?} after it");
    kill(a).await;
    stop_all([b]).await;
    sim.shutdown().await;
}
