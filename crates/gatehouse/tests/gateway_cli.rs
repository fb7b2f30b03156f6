//! `gatehouse gateway` as a process: fatal Discord close codes end it with a
//! message naming the setting; SIGTERM stops it cleanly and a new process
//! resumes the sessions; the token never reaches a log line.

use std::process::Stdio;
use std::time::{Duration, Instant};

use discord_sim::{GuildsSpec, ShardEvent, SimConfig, Simulator, TrafficMix, TrafficSpec};
use testkit::http;
use testkit::nats::{stream_len, NatsServer};
use testkit::sim::assert_exactly_once;
use tokio::process::Command;

#[path = "common/process.rs"]
mod process;

use process::{finish, free_addr, gateway, kill, launch, sigterm, until_running, Running, WAIT};

const TOKEN: &str = "gw-test-token-5ecret";

async fn simulator() -> Simulator {
    testkit::sim::start_fast(TOKEN).await
}

fn error_line(output: &str) -> String {
    output
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned()
}

async fn refused_with(token: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let nats = NatsServer::start();
    let sim = simulator().await;
    sim.control().create_guilds(&GuildsSpec::default());
    let child = launch(gateway(&sim, &nats, token, extra));
    let result = finish(child, Duration::from_secs(30)).await;
    sim.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_stops_the_gateway_naming_discord_token() {
    let wrong = "not-the-token-7f3a9c";
    let (code, output) = refused_with(wrong, &[]).await;
    assert_eq!(code, Some(1), "{output}");
    let line = error_line(&output);
    assert!(
        line.contains("DISCORD_TOKEN") && line.contains("4004"),
        "{line}\n{output}"
    );
    assert!(!output.contains(wrong), "the token leaked: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_intents_stop_the_gateway_naming_intents() {
    let (code, output) = refused_with(TOKEN, &[("INTENTS", "GUILDS|GUILD_PRESENCES")]).await;
    assert_eq!(code, Some(1), "{output}");
    let line = error_line(&output);
    assert!(
        line.contains("INTENTS") && line.contains("4014"),
        "{line}\n{output}"
    );
    assert!(!output.contains(TOKEN), "the token leaked: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_one_line_naming_the_variable() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let child = launch(gateway(&sim, &nats, TOKEN, &[("SHARDS", "0-x")]));
    let (code, output) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1));
    assert!(
        error_line(&output).starts_with("error: SHARDS (--shards):"),
        "{output}"
    );
    let child = launch(gateway(&sim, &nats, "", &[]));
    let (code, output) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1));
    assert!(
        error_line(&output).contains("DISCORD_TOKEN (--discord-token): not set"),
        "{output}"
    );
    // Read before the runtime starts: refused by the flag parser, as clearly.
    let child = launch(gateway(&sim, &nats, TOKEN, &[("GATEWAY_THREADS", "0")]));
    let (code, output) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(2));
    let line = error_line(&output);
    assert!(
        line.contains("--threads") && line.contains("1..=1024"),
        "{output}"
    );
    sim.shutdown().await;
}

#[test]
fn help_does_not_show_the_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["gateway", "--help"])
        .env("DISCORD_TOKEN", "help-secret-123")
        .env("NATS_URL", "nats://user:help-pass@127.0.0.1:4222")
        .output()
        .expect("gatehouse runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DISCORD_TOKEN"), "{text}");
    assert!(
        !text.contains("help-secret-123") && !text.contains("help-pass"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_resumes_with_every_event_once() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 6,
        members_per_guild: 3,
        roles_per_guild: 1,
    });
    let addr = free_addr().to_string();
    let first = launch(gateway(&sim, &nats, TOKEN, &[("HTTP_ADDR", &addr)]));
    let http = addr.parse().expect("address");
    until_running(http, "first", &[0, 1]).await;

    // A steady stream of member events that goes on across the restart.
    let traffic = control.start_traffic(TrafficSpec {
        events: 600,
        rate_per_second: Some(300.0),
        mix: TrafficMix {
            member_join: 2,
            member_leave: 1,
            member_update: 2,
            interaction: 0,
        },
        guilds: guilds.clone(),
        ..TrafficSpec::default()
    });
    // Stop it mid-stream: once part of the traffic is in, not at a guess.
    let access = nats.access();
    testkit::eventually(
        "100 events published by the first gateway",
        WAIT,
        || async { stream_len(&access, "EVENTS").await >= 100 },
    )
    .await;
    sigterm(&first);
    let stopping = Instant::now();
    let (code, first_output) = finish(first, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{first_output}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        stopping.elapsed()
    );
    assert!(
        first_output.contains("session stored for the next process"),
        "{first_output}"
    );
    let password = access
        .env(bus::Process::Gateway)
        .into_iter()
        .find(|(k, _)| *k == "NATS_PASSWORD")
        .map(|(_, v)| v)
        .expect("the private server has users");
    assert!(
        !first_output.contains(&password),
        "the NATS password leaked"
    );

    let second = launch(gateway(&sim, &nats, TOKEN, &[("HTTP_ADDR", &addr)]));
    until_running(http, "second", &[0, 1]).await;
    let report = traffic.wait().await;
    assert!(report.emitted > 0);
    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    for shard in 0..2 {
        let t = control.transcript(shard);
        assert_eq!(
            t.identifies, 1,
            "shard {shard} identified again: {:?}",
            t.events
        );
        assert!(
            t.events
                .iter()
                .any(|e| matches!(e, ShardEvent::Resumed { .. })),
            "shard {shard} did not resume: {:?}",
            t.events
        );
    }
    sigterm(&second);
    let (code, second_output) = finish(second, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{second_output}");
    for output in [&first_output, &second_output] {
        assert!(!output.contains(TOKEN), "the token leaked into the logs");
        assert!(
            output.lines().all(|l| l.starts_with('{')),
            "every log line is JSON: {output}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_resumes_and_replays_the_gap_once() {
    let nats = NatsServer::start();
    let sim = simulator().await;
    let control = sim.control();
    let guilds = control.create_guilds(&GuildsSpec {
        count: 6,
        members_per_guild: 3,
        roles_per_guild: 1,
    });
    let addr = free_addr().to_string();
    let http = addr.parse().expect("address");
    let first = launch(gateway(&sim, &nats, TOKEN, &[("HTTP_ADDR", &addr)]));
    until_running(http, "first", &[0, 1]).await;

    // A steady stream that goes on while no gateway runs.
    let traffic = control.start_traffic(TrafficSpec {
        events: 900,
        rate_per_second: Some(300.0),
        mix: TrafficMix {
            member_join: 2,
            member_leave: 1,
            member_update: 2,
            interaction: 0,
        },
        guilds: guilds.clone(),
        ..TrafficSpec::default()
    });
    let access = nats.access();
    testkit::eventually(
        "150 events published by the first gateway",
        WAIT,
        || async { stream_len(&access, "EVENTS").await >= 150 },
    )
    .await;
    // Sessions are stored while the gateway runs, with a sequence that
    // moves on with the stream.
    let admin = access.jetstream(bus::Process::Admin).await;
    let bucket = admin
        .get_key_value(bus::SESSIONS_BUCKET)
        .await
        .expect("the session bucket");
    testkit::eventually(
        "both shards' sessions checkpointed past sequence 20",
        WAIT,
        || async {
            let mut both = true;
            for shard in 0..2 {
                let stored = bucket
                    .get(gateway::sessions::key(shard, 2))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<gateway::StoredSession>(&b).ok());
                both &= stored.is_some_and(|s| s.sequence > 20);
            }
            both
        },
    )
    .await;
    // A crash: no close frame, no flush, no session stored on the way out.
    // What the next process resumes from is what was checkpointed while
    // the first one ran.
    let first_output = kill(first).await;
    let published_by_first = stream_len(&access, "EVENTS").await;
    // The gap: events Discord sends while nobody listens.
    let emitted = || {
        traffic
            .progress
            .emitted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let at_kill = emitted();
    testkit::eventually(
        "100 more events sent while no gateway runs",
        WAIT,
        || async { emitted() >= at_kill + 100 },
    )
    .await;

    let second = launch(gateway(&sim, &nats, TOKEN, &[("HTTP_ADDR", &addr)]));
    until_running(http, "second", &[0, 1]).await;
    let report = traffic.wait().await;
    assert!(report.emitted > published_by_first as u64, "{report:?}");
    assert_exactly_once(&sim, &nats.access(), "EVENTS", 0..2, "").await;
    for shard in 0..2 {
        let t = control.transcript(shard);
        assert_eq!(
            t.identifies, 1,
            "shard {shard} identified again instead of resuming: {:?}",
            t.events
        );
        assert!(
            t.events
                .iter()
                .any(|e| matches!(e, ShardEvent::Resumed { .. })),
            "shard {shard} did not resume: {:?}",
            t.events
        );
    }
    sigterm(&second);
    let (code, second_output) = finish(second, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{second_output}");
    for output in [&first_output, &second_output] {
        assert!(!output.contains(TOKEN), "the token leaked into the logs");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_sim_prints_its_urls_and_serves_until_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["sim", "--guilds", "3", "--members", "2", "--shards", "2"])
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("gatehouse sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut urls = std::collections::HashMap::new();
    while urls.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the simulator prints its URLs")
            .expect("stdout readable")
            .expect("a line");
        if let Some((key, value)) = line.split_once('=') {
            urls.insert(key.to_owned(), value.to_owned());
        }
    }
    assert!(urls["DISCORD_GATEWAY_URL"].starts_with("ws://127.0.0.1:"));
    let api: std::net::SocketAddr = urls["DISCORD_API_URL"]
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let (status, body) = http::get(api, "/_sim/stats").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"guilds\":3"), "{body}");
    let (status, body) = http::get(api, "/api/v10/gateway/bot").await;
    assert_eq!(status, 401, "REST needs the token: {body}");

    let running = Running {
        child,
        output: tokio::spawn(async { String::new() }),
    };
    sigterm(&running);
    let (code, _) = finish(running, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_register_offers_the_four_commands_and_a_rerun_keeps_their_ids() {
    let sim = Simulator::start(SimConfig {
        token: "commands-token-5ecret".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let app = sim.config().application_id.to_string();
    let register = |token: &str, app: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["commands", "register"])
            .env("DISCORD_TOKEN", token)
            .env("DISCORD_APPLICATION_ID", app)
            .env("DISCORD_API_URL", sim.api_url())
            .env("LOG_FORMAT", "text")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let ids = || -> Vec<(String, String)> {
        sim.control()
            .application_commands()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let (code, stdout, stderr) = register("commands-token-5ecret", &app);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("registered 5 global commands"), "{stdout}");
    let first = ids();
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["profile", "badges", "check", "link-wallet", "wallets"]
    );
    let link = sim
        .control()
        .application_commands()
        .into_iter()
        .find(|c| c["name"] == "link-wallet")
        .unwrap();
    let options: Vec<&str> = link["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(options, ["address", "signature"]);

    let (code, _, stderr) = register("commands-token-5ecret", &app);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(ids(), first, "a re-run changed the command ids");

    // A wrong token: one line, non-zero, the token not echoed.
    let (code, _, stderr) = register("not-the-token", &app);
    assert_eq!(code, Some(1));
    let line = error_line(&stderr);
    assert!(line.contains("registering the slash commands"), "{stderr}");
    assert!(line.contains("DISCORD_APPLICATION_ID"), "{line}");
    assert!(!stderr.contains("not-the-token"), "{stderr}");
    // Another application's id is refused by Discord.
    let (code, _, stderr) = register("commands-token-5ecret", "12345");
    assert_eq!(code, Some(1), "{stderr}");
    sim.shutdown().await;
}
