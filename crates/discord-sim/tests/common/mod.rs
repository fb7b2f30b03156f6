//! Shared harness: a simulator and real Twilight shards pointed at it.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use discord_sim::{SimConfig, Simulator};
use tokio::sync::mpsc;
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt};

pub const TOKEN: &str = "test-token";

/// A config for fast tests: no identify spacing, short heartbeats.
pub fn fast_config() -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        identify_interval_ms: 0,
        max_concurrency: 16,
        heartbeat_interval_ms: 1_000,
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

/// What a shard task saw.
#[derive(Debug)]
pub enum Seen {
    Event(Box<Event>),
    Error(String),
    Ended,
}

/// A Twilight shard running in its own task, reporting what it sees.
pub struct ShardProbe {
    pub rx: mpsc::UnboundedReceiver<Seen>,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn twilight_shard(
    sim: &Simulator,
    id: u32,
    total: u32,
    token: &str,
    intents: Intents,
) -> Shard {
    // A no-op identify queue: the simulator's own limiter is under test
    // elsewhere, and Twilight's 5-second spacing would only slow tests down.
    let queue = InMemoryQueue::new(0, 1000, Duration::from_secs(86_400), 1000);
    let config = ConfigBuilder::new(token.to_owned(), intents)
        .proxy_url(sim.gateway_url())
        .queue(queue)
        .build();
    Shard::with_config(ShardId::new(id, total), config)
}

pub fn spawn_shard(mut shard: Shard) -> ShardProbe {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
            let seen = match item {
                Ok(event) => Seen::Event(Box::new(event)),
                Err(error) => Seen::Error(format!("{error:?}")),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
        let _ = tx.send(Seen::Ended);
    });
    ShardProbe { rx, task }
}

pub fn probe(sim: &Simulator, id: u32, total: u32) -> ShardProbe {
    spawn_shard(twilight_shard(
        sim,
        id,
        total,
        TOKEN,
        Intents::GUILDS | Intents::GUILD_MEMBERS,
    ))
}

impl ShardProbe {
    /// Next event matching `pick`, skipping others; fails on a shard error,
    /// the end of the shard, or the timeout.
    pub async fn expect<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Seen::Event(event))) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(Some(Seen::Error(error))) => panic!("shard error: {error}"),
                Ok(Some(Seen::Ended)) | Ok(None) => panic!("shard ended"),
                Err(_) => panic!("timed out"),
            }
        }
    }

    /// Everything seen within `within`, stopping early at the shard's end.
    pub async fn collect_for(&mut self, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Seen::Ended)) | Ok(None) => {
                    out.push(Seen::Ended);
                    return out;
                }
                Ok(Some(seen)) => out.push(seen),
                Err(_) => return out,
            }
        }
    }
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

pub const WAIT: Duration = Duration::from_secs(10);

/// A response read by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// One HTTP/1.1 request without a client library: twilight-http retries
/// 429s by itself, so a test that wants to see a 429 has to look lower.
pub async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> RawResponse {
    raw_request_with(addr, method, path, None).await
}

/// [`raw_request`] with an optional JSON body.
pub async fn raw_request_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bot {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("response read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}
