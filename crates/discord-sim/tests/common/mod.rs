//! Shared harness: a simulator and real Twilight shards pointed at it.

#![allow(dead_code)]

pub mod raw;

use std::time::{Duration, Instant};

pub use testkit::sim::start;

use discord_sim::{SimConfig, Simulator};
use testkit::http::Response;
use tokio::sync::mpsc;
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt};

pub const TOKEN: &str = "test-token";

pub fn fast_config() -> SimConfig {
    testkit::sim::fast_config(TOKEN)
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
                Ok(Some(Seen::Ended) | None) => panic!("shard ended"),
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
                Ok(Some(Seen::Ended) | None) => {
                    out.push(Seen::Ended);
                    return out;
                }
                Ok(Some(seen)) => out.push(seen),
                Err(_) => return out,
            }
        }
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// One request as a bot, below twilight-http: it retries 429s by itself,
/// so a test that wants to see a 429 has to look lower.
pub async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> Response {
    raw_request_with(addr, method, path, None).await
}

/// [`raw_request`] with an optional JSON body.
pub async fn raw_request_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = format!("Bot {TOKEN}");
    testkit::http::request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await
}
