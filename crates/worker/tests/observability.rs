//! A worker's `/healthz`, `/readyz` and `/metrics`, served on a port of its
//! own while it runs, against the stack's NATS and PostgreSQL.
//!
//! The Prometheus recorder is process-global: every test here shares it,
//! so a test looks for its own series (its stream, its subject) and for
//! counts of at least what it caused, never for exact totals.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::{guild_join, Harness, WAIT};
use testkit::cut::Cut;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker::{HttpListener, Worker, WorkerError};

/// A worker with its HTTP endpoints on 127.0.0.1, port chosen by the system.
struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    async fn start(h: &Harness, store: store::Store) -> Running {
        let listener = HttpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a free port");
        let worker =
            Worker::new(h.config.clone(), h.worker_js.clone(), store, None).with_http(listener);
        let addr = worker.http_addr().expect("serving HTTP");
        assert_ne!(addr.port(), 0, "the bound port, not the one asked for");
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        Running { addr, stop, task }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        testkit::http::get(self.addr, path).await
    }

    async fn ready(&self) {
        testkit::eventually("/readyz to answer 200", WAIT, || async {
            self.get("/readyz").await.0 == 200
        })
        .await;
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly");
    }
}

/// The value of the first sample of `metric` whose labels include every
/// one of `labels` (`name="value"`), in Prometheus' text format.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(metric)?;
            let labelled = match rest.strip_prefix('{') {
                Some(inner) => inner.strip_suffix('}')?,
                None if rest.is_empty() => "",
                None => return None,
            };
            let own: Vec<&str> = labelled.split(',').collect();
            labels
                .iter()
                .all(|l| own.contains(l))
                .then(|| value.parse().ok())?
        })
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served_while_the_worker_runs() {
    let h = Harness::new("worker_http").await;
    let worker = Running::start(&h, h.store.clone()).await;

    assert_eq!(worker.get("/healthz").await, (200, "ok\n".to_owned()));
    worker.ready().await;
    assert_eq!(worker.get("/readyz").await, (200, "ready\n".to_owned()));

    h.publish(&guild_join(4242, "s", 1)).await;
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM communities", 1)
            .await,
        1
    );
    // Counted when the message is settled, a moment after its commit.
    let seen = Mutex::new(String::new());
    let counted = testkit::eventually::holds_within(WAIT, || async {
        let (status, text) = worker.get("/metrics").await;
        let ok = status == 200
            && sample(
                &text,
                "worker_messages_total",
                &[r#"stream="events""#, r#"outcome="ok""#],
            )
            .is_some_and(|n| n >= 1.0);
        *seen.lock().expect("not poisoned") = text;
        ok
    })
    .await;
    let last = seen.into_inner().expect("not poisoned");
    assert!(counted, "no handled event counted in /metrics:\n{last}");
    // Its handling time, by event type, as a histogram.
    assert!(
        sample(
            &last,
            "worker_handler_seconds_count",
            &[r#"subject="events.guild.join""#]
        )
        .is_some_and(|n| n >= 1.0),
        "{last}"
    );
    assert!(
        sample(
            &last,
            "worker_handler_seconds_bucket",
            &[r#"subject="events.guild.join""#, r#"le="+Inf""#]
        )
        .is_some(),
        "{last}"
    );
    // Where it spent its time before the handler: in the stream and in
    // delivery, then in this worker's queues.
    for waited in [
        "worker_delivery_seconds_count",
        "worker_queued_seconds_count",
    ] {
        assert!(
            sample(&last, waited, &[r#"stream="events""#]).is_some_and(|n| n >= 1.0),
            "no {waited} for the events stream:\n{last}"
        );
    }
    // Sampled once when the consumers are bound, then on a timer.
    for stream in ["events", "commands", "webhooks"] {
        let label = format!("stream=\"{stream}\"");
        assert!(
            sample(&last, "worker_consumer_pending", &[&label]).is_some(),
            "no backlog gauge for {stream}:\n{last}"
        );
    }
    assert!(
        sample(&last, "worker_db_pool_max_connections", &[]).is_some_and(|n| n >= 1.0),
        "{last}"
    );
    assert!(
        sample(&last, "worker_db_pool_acquires_total", &[]).is_some_and(|n| n >= 1.0),
        "{last}"
    );
    assert!(
        sample(&last, "worker_db_pool_waits_total", &[]).is_some(),
        "{last}"
    );

    let addr = worker.addr;
    worker.stop().await;
    // The endpoints go with the worker.
    assert_eq!(testkit::http::get(addr, "/healthz").await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_database_connection_is_timed_in_a_histogram() {
    let h = Harness::new("worker_pool_wait").await;
    // One connection, which the test holds while an event arrives.
    let store = h.db.store(1).await;
    let worker = Running::start(&h, store.clone()).await;
    worker.ready().await;
    let tenant = h
        .store
        .directory()
        .provision_guild(wire::GuildId::new(77).expect("not 0"), "held")
        .await
        .expect("a community");
    let held = store
        .begin(tenant)
        .await
        .expect("the pool's one connection");
    h.publish(&guild_join(4343, "s", 1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.commit().await.expect("nothing to commit");
    h.wait_for_count("SELECT count(*) FROM communities", 2)
        .await;
    assert!(store.pool_waits().waits >= 1, "{:?}", store.pool_waits());

    let seen = Mutex::new(String::new());
    let recorded = testkit::eventually::holds_within(WAIT, || async {
        let (_, text) = worker.get("/metrics").await;
        let ok = sample(&text, "worker_db_pool_wait_seconds_count", &[]).is_some_and(|n| n >= 1.0);
        *seen.lock().expect("not poisoned") = text;
        ok
    })
    .await;
    let last = seen.into_inner().expect("not poisoned");
    assert!(recorded, "no wait for a connection in /metrics:\n{last}");
    assert!(
        last.contains("# TYPE worker_db_pool_wait_seconds histogram"),
        "{last}"
    );
    // The wait lasted about as long as the connection was held.
    assert!(
        sample(&last, "worker_db_pool_wait_seconds_sum", &[]).is_some_and(|s| s >= 0.2),
        "{last}"
    );
    assert!(
        sample(
            &last,
            "worker_db_pool_wait_seconds_bucket",
            &[r#"le="0.1""#]
        )
        .is_some_and(|n| n < sample(&last, "worker_db_pool_wait_seconds_count", &[]).unwrap()),
        "{last}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_database_when_it_stops_answering() {
    let h = Harness::new("worker_http_db").await;
    let cut = Cut::to(SocketAddr::from(([127, 0, 0, 1], h.db.env.pgbouncer_port))).await;
    let url = h.db.app_pgbouncer_url().replace(
        &format!(":{}/", h.db.env.pgbouncer_port),
        &format!(":{}/", cut.addr.port()),
    );
    let config = store::StoreConfig::from_url(&url)
        .and_then(|c| c.with_pool_size(2))
        .expect("a store config")
        .with_connect_timeout(Duration::from_secs(1))
        .with_acquire_timeout(Duration::from_secs(1));
    let store = store::Store::connect(config)
        .await
        .expect("the database answers through the proxy");
    let worker = Running::start(&h, store).await;
    worker.ready().await;

    cut.cut().await;
    let seen = Mutex::new((0, String::new()));
    let unready = testkit::eventually::holds_within(WAIT, || async {
        let answer = worker.get("/readyz").await;
        let down = answer.0 == 503;
        *seen.lock().expect("not poisoned") = answer;
        down
    })
    .await;
    let last = seen.into_inner().expect("not poisoned");
    assert!(unready, "/readyz did not turn 503: {last:?}");
    let (_, body) = last;
    assert!(body.starts_with("not ready: database: "), "{body}");
    assert_eq!(body.lines().count(), 1, "one line: {body}");
    // Only the database is down: NATS and the consumers are not blamed.
    assert!(
        !body.contains("nats") && !body.contains("consumers"),
        "{body}"
    );
    // Still alive: nothing a restart would fix.
    assert_eq!(worker.get("/healthz").await.0, 200);

    worker.stop().await;
}
