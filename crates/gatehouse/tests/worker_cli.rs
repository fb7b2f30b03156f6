//! `gatehouse worker` as a process: SIGTERM mid-stream finishes what is in
//! flight, hands back what it had not started, exits 0, and the next
//! process picks up at once, with one effect per event.

#[path = "../../worker/tests/common/mod.rs"]
mod common;

use std::{process::Stdio, time::Duration};

use common::{member_join, Harness, WAIT};
use tokio::{io::AsyncReadExt, process::Command};

const MEMBERS: u64 = 400;
/// A worker reconnecting after NATS comes back waits out its own backoff.
const RESTART_WAIT: Duration = Duration::from_secs(40);

fn worker(h: &Harness) -> tokio::process::Child {
    worker_command(h).spawn().expect("gatehouse worker starts")
}

fn worker_command(h: &Harness) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("worker")
        .env("DATABASE_URL", h.db.app_pgbouncer_url())
        .env_remove("NATS_TOKEN")
        .envs(h.nats.access.env(bus::Process::Worker))
        .env("NATS_NAMESPACE", h.nats.ns.prefix().unwrap())
        .env("STREAM_STORAGE", "memory")
        .env("WORKER_CONCURRENCY", "8")
        // Longer than the test waits: a message stranded at shutdown would
        // only come back after this, and the test would time out.
        .env("WORKER_ACK_WAIT", "60s")
        .env("LOG_FORMAT", "json")
        .env_remove("DISCORD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
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
    testkit::eventually("the worker process to apply some joins", WAIT, || async {
        h.count("SELECT count(*) FROM profiles").await > 20
    })
    .await;
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

    let at_stop = h.count("SELECT count(*) FROM profiles").await;
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
    h.drained().await;
    assert_eq!(
        h.count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
            .await,
        MEMBERS as i64,
        "an event took effect twice or not at all"
    );
}

/// Publishes an undecodable member join under `id` with the headers the
/// gateway sends (the id only: it is the trace too), plus `traceparent` if
/// given (as another publisher might): the worker dead-letters it at once,
/// with a warning.
async fn publish_undecodable(h: &Harness, id: &str, traceparent: Option<&str>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::subjects::headers::MSG_ID, id);
    if let Some(traceparent) = traceparent {
        headers.insert(wire::trace::HEADER, traceparent);
    }
    h.nats
        .js
        .publish_with_headers(
            h.nats.ns.subject(wire::subjects::MEMBER_JOIN),
            headers,
            "{not json".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Waits for `count` dead letters, then stops the worker with SIGTERM; it
/// exits 0.
async fn dead_lettered_then_stopped(h: &Harness, child: &mut tokio::process::Child, count: usize) {
    testkit::eventually("the messages to be dead-lettered", WAIT, || async {
        h.dead_letters().await.len() >= count
    })
    .await;
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the worker stops")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_about_a_message_carries_its_envelope_id_and_trace() {
    let h = Harness::new("cli_worker_envelope_id").await;
    // Undecodable, so it is dead-lettered at once with a warning; published
    // under an id as the gateway publishes every event.
    let id = "0b5ad3c2-6f1e-5a7b-9c8d-4e3f2a1b0c9d";
    publish_undecodable(&h, id, None).await;
    // Another publisher's own trace context is continued instead.
    let foreign_id = "7d0f3a41-2b6c-5e8d-9a1b-3c4d5e6f7a8b";
    let foreign_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let foreign = format!("00-{foreign_trace}-00f067aa0ba902b7-01");
    publish_undecodable(&h, foreign_id, Some(&foreign)).await;
    let mut child = worker(&h);
    dead_lettered_then_stopped(&h, &mut child, 2).await;
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut logs).await;
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut logs).await;
    }
    let dead_letter_line = |id: &str| -> serde_json::Value {
        let line = logs
            .lines()
            .find(|l| l.contains("dead-lettered") && l.contains(id))
            .unwrap_or_else(|| panic!("no dead-letter line naming {id}: {logs}"));
        serde_json::from_str(line).expect("a JSON log line")
    };
    let json = dead_letter_line(id);
    assert_eq!(
        json["span"]["envelope_id"], id,
        "the line does not name the envelope it is about: {json}"
    );
    assert_eq!(
        json["span"]["trace_id"], "0b5ad3c26f1e5a7b9c8d4e3f2a1b0c9d",
        "the line does not continue the gateway's trace: {json}"
    );
    assert_eq!(
        dead_letter_line(foreign_id)["span"]["trace_id"],
        foreign_trace,
        "the line does not continue the publisher's own trace"
    );
}

/// A stand-in OpenTelemetry collector: answers every OTLP/HTTP request
/// with 200 and hands over each request's path and body.
async fn collector() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request per connection is all the test needs.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let _ = tx.send((path, buf[end + 4..end + 4 + length].to_vec()));
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_the_worker_exports_its_message_spans_in_the_gateways_trace() {
    let h = Harness::new("cli_worker_otel").await;
    let (addr, mut requests) = collector().await;
    let id = "5c1e7a2b-3d4f-5a6b-8c9d-0e1f2a3b4c5d";
    publish_undecodable(&h, id, None).await;
    let mut child = {
        let mut cmd = worker_command(&h);
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_SERVICE_NAME", "worker-under-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().expect("gatehouse worker starts")
    };
    // A clean stop flushes the spans still in the batch.
    dead_lettered_then_stopped(&h, &mut child, 1).await;
    // OTLP/protobuf carries ids as raw bytes: the envelope id's 16 bytes
    // are the trace id, its last 8 the parent (the gateway's publish).
    let trace_id = uuid::Uuid::parse_str(id).unwrap().into_bytes();
    let mut bodies = Vec::new();
    while let Ok((path, body)) = requests.try_recv() {
        assert_eq!(path, "/v1/traces");
        bodies.push(body);
    }
    let found = bodies.iter().any(|b| {
        b.windows(16).any(|w| w == trace_id) && b.windows(17).any(|w| w == b"worker-under-test")
    });
    assert!(
        found,
        "no exported span in the envelope's trace ({} export requests)",
        bodies.len()
    );
}

/// Publishes as the gateway does: the envelope id as Nats-Msg-Id.
async fn publish(
    js: &async_nats::jetstream::Context,
    ns: &bus::Namespace,
    envelope: &wire::Envelope,
) {
    testkit::nats::publish_with_msg_id(js, ns, envelope, envelope.id.as_str()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let mut nats = testkit::nats::NatsServer::start();
    let db = testkit::TestDb::create("cli_worker_nats_restart").await;
    let store = db.store(2).await;
    store
        .directory()
        .provision_guild(wire::GuildId::new(999).expect("not 0"), "g")
        .await
        .unwrap();
    let ns = bus::Namespace::root();
    let js = nats.access().jetstream(bus::Process::Admin).await;
    // File storage, as in production: the streams survive the restart.
    bus::ensure_streams(&js, &bus::Topology::new(ns.clone()))
        .await
        .unwrap();
    for user in 1..=MEMBERS / 2 {
        publish(&js, &ns, &member_join(999, user, "s1", user)).await;
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("worker")
        .env("DATABASE_URL", db.app_pgbouncer_url())
        .env_remove("NATS_TOKEN")
        .envs(nats.access().env(bus::Process::Worker))
        .env("WORKER_CONCURRENCY", "8")
        // Acks sent while NATS was down are lost: those messages come back
        // after this, and the test waits for them to prove they change
        // nothing. Short, so that it can.
        .env("WORKER_ACK_WAIT", "5s")
        .env("LOG_FORMAT", "json")
        .env_remove("NATS_NAMESPACE")
        .env_remove("DISCORD_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gatehouse worker starts");
    testkit::eventually("the worker process to apply some joins", WAIT, || async {
        db.count("SELECT count(*) FROM profiles").await >= 20
    })
    .await;

    // NATS crashes mid-stream and comes back on the same store.
    nats.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.resume();
    for user in MEMBERS / 2 + 1..=MEMBERS {
        publish(&js, &ns, &member_join(999, user, "s1", user)).await;
    }

    assert_eq!(
        db.wait_for_count(
            "SELECT count(*) FROM profiles",
            MEMBERS as i64,
            RESTART_WAIT
        )
        .await,
        MEMBERS as i64,
        "events lost across the NATS restart"
    );
    testkit::drained(&js, &ns, RESTART_WAIT).await;
    assert_eq!(
        db.count("SELECT count(*) FROM audit_logs WHERE action = 'member.joined'")
            .await,
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
