//! Harness: the simulator, a private NATS, and gateways built by the
//! production code path pointed at both.

#![allow(dead_code)]

pub mod nats;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use discord_sim::{SimConfig, Simulator};
use gateway::{Gateway, GatewayConfig, Settings, Token};
use wire::EventId;

pub const TOKEN: &str = "gw-test-token-5ecret";
pub const WAIT: Duration = Duration::from_secs(20);

/// A simulator without identify spacing and with 1 s heartbeats, so that
/// faults are noticed quickly.
pub async fn simulator() -> Simulator {
    Simulator::start(SimConfig {
        token: TOKEN.into(),
        identify_interval_ms: 0,
        max_concurrency: 16,
        heartbeat_interval_ms: 1_000,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// Settings for a gateway owning `shards` of `total` against `sim` and `nats_url`.
pub fn settings(sim: &Simulator, nats_url: &str, shards: &str, total: u32) -> Settings {
    Settings {
        discord_token: Some(Token::new(TOKEN)),
        shards: Some(shards.into()),
        total_shards: Some(total.to_string()),
        discord_gateway_url: Some(sim.gateway_url()),
        discord_api_url: Some(sim.api_url()),
        identify_queue: Some("unlimited".into()),
        nats_url: Some(nats_url.into()),
        http_addr: Some("127.0.0.1:0".into()),
        ..Settings::default()
    }
}

pub async fn start(settings: Settings) -> Gateway {
    let config = GatewayConfig::from_settings(settings).expect("valid test config");
    Gateway::start(config).await.expect("gateway starts")
}

/// Polls `check` until it is true or `within` passes; returns the last result.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dispatches that become envelopes.
const PUBLISHED_DISPATCHES: [&str; 6] = [
    "GUILD_CREATE",
    "GUILD_DELETE",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_REMOVE",
    "GUILD_MEMBER_UPDATE",
    "INTERACTION_CREATE",
];

/// The envelope ids of every publishable dispatch the simulator sent to
/// `shards` (replays collapse into their original: same session and sequence).
pub fn expected_ids(
    sim: &Simulator,
    stream: &str,
    shards: impl IntoIterator<Item = u32>,
) -> BTreeSet<String> {
    described_ids(sim, stream, shards).into_keys().collect()
}

/// [`expected_ids`] with what each id is, for failure messages.
pub fn described_ids(
    sim: &Simulator,
    stream: &str,
    shards: impl IntoIterator<Item = u32>,
) -> std::collections::BTreeMap<String, String> {
    // Interactions go to COMMANDS, everything else to EVENTS.
    let commands = stream.ends_with("COMMANDS");
    let mut ids = std::collections::BTreeMap::new();
    for shard in shards {
        let transcript = sim.control().transcript(shard);
        for frame in &transcript.sent {
            let publishable = frame.op == 0
                && frame.event.as_deref().is_some_and(|e| {
                    PUBLISHED_DISPATCHES.contains(&e) && (e == "INTERACTION_CREATE") == commands
                });
            if let (true, Some(session), Some(seq)) = (publishable, &frame.session_id, frame.seq) {
                ids.insert(
                    EventId::for_dispatch(shard, session, seq).to_string(),
                    format!(
                        "shard {shard} {:?} seq {seq} replay {}",
                        frame.event, frame.replay
                    ),
                );
            }
        }
    }
    ids
}

/// Waits until the stream holds exactly the ids the simulator sent, then
/// checks that no id is there twice and that each message's `Nats-Msg-Id`
/// and subject match its envelope. Returns what was stored.
pub async fn assert_exactly_once(
    sim: &Simulator,
    nats_url: &str,
    stream: &str,
    shards: impl IntoIterator<Item = u32> + Clone,
    subject_prefix: &str,
) -> Vec<nats::Stored> {
    let deadline = Instant::now() + WAIT;
    let (settled, last) = loop {
        let expected = expected_ids(sim, stream, shards.clone());
        let stored = nats::stream_len(nats_url, stream).await;
        if stored as usize == expected.len() && !expected.is_empty() {
            break (true, (expected.len(), stored));
        }
        if Instant::now() >= deadline {
            break (false, (expected.len(), stored));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stored = nats::read_stream(nats_url, stream).await;
    let ids: Vec<String> = stored.iter().map(|s| s.envelope.id.to_string()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an id is in the stream twice");
    let described = described_ids(sim, stream, shards);
    let expected: BTreeSet<String> = described.keys().cloned().collect();
    let missing: Vec<_> = expected
        .difference(&unique)
        .map(|id| (id, described.get(id)))
        .collect();
    let extra: Vec<_> = unique.difference(&expected).collect();
    assert!(
        settled && missing.is_empty() && extra.is_empty(),
        "stream {stream} does not hold exactly the sent events: {} expected, {} stored; missing {missing:?}; unexpected {extra:?}",
        last.0,
        last.1
    );
    for s in &stored {
        assert_eq!(
            s.msg_id.as_deref(),
            Some(s.envelope.id.as_str()),
            "Nats-Msg-Id"
        );
        let subject = s.envelope.subject().expect("a known type");
        assert_eq!(s.subject, format!("{subject_prefix}{subject}"));
    }
    stored
}

/// A plain HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub async fn ready(gateway: &Gateway) -> bool {
    http_get(gateway.http_addr(), "/readyz").await.0 == 200
}
