//! `gatehouse gateway` run as a child process, as an operator runs it: for
//! the tests that stop it with signals (`gateway_cli.rs`, `gateway_fleet.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use discord_sim::Simulator;
use testkit::http;
use testkit::nats::NatsServer;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(20);

/// The gateway binary pointed at `sim` and `nats` (as the gateway user, from
/// NATS_USER and NATS_PASSWORD), on shards 0-1 of 2, logging JSON at
/// `debug`; `extra` overrides any of it. Leases last 2 s, so that a dead
/// process's shards are taken over quickly.
pub fn gateway(sim: &Simulator, nats: &NatsServer, token: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("gateway")
        .env_remove("DISCORD_BOT_TOKEN")
        .env_remove("GATEWAY_CONFIG")
        .env_remove("POOL_ID")
        .env_remove("SHARD_COUNT")
        .env("DISCORD_TOKEN", token)
        .env("SHARDS", "0-1")
        .env("TOTAL_SHARDS", "2")
        .env("IDENTIFY_QUEUE", "unlimited")
        .env("SHARD_LEASE_TTL", "2s")
        .env("DISCORD_GATEWAY_URL", sim.gateway_url())
        .env("DISCORD_API_URL", sim.api_url())
        .env_remove("NATS_TOKEN")
        .envs(nats.access().env(bus::Process::Gateway))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// A running gateway whose output is drained as it comes: a child blocked on
/// a full stderr pipe would stall.
pub struct Running {
    pub child: Child,
    pub output: tokio::task::JoinHandle<String>,
}

pub fn launch(mut cmd: Command) -> Running {
    let mut child = cmd.spawn().expect("gatehouse starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let output = tokio::spawn(async move {
        let mut out = String::new();
        let mut err = String::new();
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        out + &err
    });
    Running { child, output }
}

/// Waits for the gateway to exit (at most `within`) and returns its exit
/// code and everything it printed.
pub async fn finish(mut running: Running, within: Duration) -> (Option<i32>, String) {
    let status = tokio::time::timeout(within, running.child.wait())
        .await
        .expect("the gateway exits in time")
        .expect("wait for the gateway");
    let output = running.output.await.expect("output read");
    (status.code(), output)
}

/// SIGKILL: no close frame, no flush, nothing stored or released.
pub async fn kill(mut running: Running) -> String {
    running.child.start_kill().expect("SIGKILL sent");
    let _ = running.child.wait().await;
    running.output.await.expect("output read")
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

pub fn sigterm(running: &Running) {
    let pid = running.child.id().expect("running child").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The shards a gateway runs, each with its state, from its `/readyz`;
/// `None` while it does not answer.
pub async fn held(addr: SocketAddr) -> Option<BTreeMap<u32, String>> {
    let (_, body) = http::get(addr, "/readyz").await;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let shards = json.get("shards")?.as_object()?;
    Some(
        shards
            .iter()
            .filter_map(|(id, phase)| Some((id.parse().ok()?, phase.as_str()?.to_owned())))
            .collect(),
    )
}

/// Waits until the gateway at `addr` runs exactly `shards`, every one active.
pub async fn until_running(addr: SocketAddr, which: &str, shards: &[u32]) {
    testkit::eventually(
        &format!("the {which} gateway running shards {shards:?}, all active"),
        WAIT,
        || async {
            held(addr).await.is_some_and(|held| {
                held.keys().copied().eq(shards.iter().copied())
                    && held.values().all(|phase| phase == "active")
            })
        },
    )
    .await;
}
