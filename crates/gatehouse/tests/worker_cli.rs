//! `gatehouse worker` as a process: SIGTERM mid-stream finishes what is in
//! flight, hands back what it had not started, exits 0, and the next
//! process picks up at once, with one effect per event.

#[path = "../../worker/tests/common/mod.rs"]
mod common;

use std::{process::Stdio, time::Duration};

use common::{member_join, Harness};
use tokio::{io::AsyncReadExt, process::Command};

const MEMBERS: u64 = 400;

fn worker(h: &Harness) -> tokio::process::Child {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("worker")
        .env("DATABASE_URL", h.db.app_pgbouncer_url())
        .env("NATS_URL", &h.db.env.nats_url)
        .env("NATS_NAMESPACE", h.ns.prefix().unwrap())
        .env("STREAM_STORAGE", "memory")
        .env("WORKER_CONCURRENCY", "8")
        // Longer than the test waits: a message stranded at shutdown would
        // only come back after this, and the test would time out.
        .env("WORKER_ACK_WAIT", "60s")
        .env("LOG_FORMAT", "json")
        .env_remove("DISCORD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gatehouse worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_the_next_process_loses_nothing() {
    let h = Harness::new("cli_worker_sigterm").await;
    // The community exists up front, so no member event has to wait for
    // it: a message waiting out a retry delay is unacknowledged by design,
    // and this test is about work dropped at shutdown.
    h.store
        .directory()
        .provision_guild(wire::GuildId::new(888).expect("not 0"), "g")
        .await
        .unwrap();
    for user in 1..=MEMBERS {
        h.publish(&member_join(888, user, "s1", 1 + user)).await;
    }

    let mut first = worker(&h);
    let admin = h.db.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM profiles", &[])
            .await
            .unwrap()
            .get(0);
        if n > 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker process applied nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = first.id().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), first.wait())
        .await
        .expect("the worker did not stop within 15 s of SIGTERM")
        .unwrap();
    let mut logs = String::new();
    if let Some(mut err) = first.stderr.take() {
        let _ = err.read_to_string(&mut logs).await;
    }
    assert!(status.success(), "exit {status:?}: {logs}");
    assert!(logs.contains("worker stopped cleanly"), "{logs}");

    let at_stop: i64 = admin
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        at_stop < MEMBERS as i64,
        "the worker finished everything before the signal; nothing was tested"
    );

    // Whatever the first process had taken but not started was handed back
    // with a NAK, so the next one gets it at once, not after ack_wait (60 s;
    // wait_for_count gives up after 20).
    let _second = worker(&h);
    assert_eq!(
        h.wait_for_count("SELECT count(*) FROM profiles", MEMBERS as i64)
            .await,
        MEMBERS as i64,
        "messages the first process held came back only after ack_wait"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
            .await,
        MEMBERS as i64,
        "an event took effect twice or not at all"
    );
}

#[path = "../../gateway/tests/common/nats.rs"]
mod private_nats;

/// Publishes as the gateway does: the envelope id as Nats-Msg-Id.
async fn publish(
    js: &async_nats::jetstream::Context,
    ns: &wire::Namespace,
    envelope: &wire::Envelope,
) {
    let subject = ns.subject(envelope.subject().unwrap());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", envelope.id.as_str());
    js.publish_with_headers(subject, headers, envelope.to_json().unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let mut nats = private_nats::NatsServer::start();
    let db = testkit::TestDb::create("cli_worker_nats_restart").await;
    let store = db.store(2).await;
    store
        .directory()
        .provision_guild(wire::GuildId::new(999).expect("not 0"), "g")
        .await
        .unwrap();
    let ns = wire::Namespace::root();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // File storage, as in production: the streams survive the restart.
    worker::ensure_streams(&js, &ns, &worker::StreamLimits::default())
        .await
        .unwrap();
    for user in 1..=MEMBERS / 2 {
        publish(&js, &ns, &member_join(999, user, "s1", user)).await;
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("worker")
        .env("DATABASE_URL", db.app_pgbouncer_url())
        .env("NATS_URL", nats.url())
        .env("WORKER_CONCURRENCY", "8")
        .env("WORKER_ACK_WAIT", "60s")
        .env("LOG_FORMAT", "json")
        .env_remove("NATS_NAMESPACE")
        .env_remove("DISCORD_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gatehouse worker starts");
    let admin = db.admin().await;
    let count = |sql: &'static str| {
        let admin = &admin;
        async move { admin.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count("SELECT count(*) FROM profiles").await < 20 {
        assert!(tokio::time::Instant::now() < deadline, "nothing applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // NATS crashes mid-stream and comes back on the same store.
    nats.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.resume();
    for user in MEMBERS / 2 + 1..=MEMBERS {
        publish(&js, &ns, &member_join(999, user, "s1", user)).await;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while count("SELECT count(*) FROM profiles").await < MEMBERS as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events lost across the NATS restart: {} of {MEMBERS} applied",
            count("SELECT count(*) FROM profiles").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'").await,
        MEMBERS as i64,
        "an event took effect twice"
    );
    let pid = worker.id().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait())
        .await
        .expect("the worker did not stop after the restart")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
