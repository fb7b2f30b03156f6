//! How the simulator copes with many guilds: creates them, connects real
//! Twilight shards, and reports how long until every GUILD_CREATE arrived,
//! then the throughput of a member-event storm and the simulator's RSS.
//!
//! `cargo run --release -p discord-sim --example sim_scale -- 10000 4 50000`
//! (guilds, shards, storm events).

use std::time::{Duration, Instant};

use discord_sim::{GuildsSpec, SimConfig, Simulator, TrafficMix, TrafficSpec};
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt};

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let guilds = args.next().transpose()?.unwrap_or(1_000);
    let shards = args.next().transpose()?.unwrap_or(2) as u32;
    let storm = args.next().transpose()?.unwrap_or(20_000) as u64;

    let sim = Simulator::start(SimConfig {
        token: "scale".into(),
        identify_interval_ms: 0,
        max_concurrency: 16,
        ..SimConfig::default()
    })
    .await?;
    let started = Instant::now();
    sim.control().create_guilds(&GuildsSpec {
        count: guilds,
        members_per_guild: 10,
        roles_per_guild: 3,
    });
    println!("created {guilds} guilds in {:?}", started.elapsed());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for id in 0..shards {
        let queue = InMemoryQueue::new(0, 1000, Duration::from_secs(86_400), 1000);
        let config = ConfigBuilder::new("scale".into(), Intents::GUILDS | Intents::GUILD_MEMBERS)
            .proxy_url(sim.gateway_url())
            .queue(queue)
            .build();
        let mut shard = Shard::with_config(ShardId::new(id, shards), config);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = shard
                .next_event(
                    EventTypeFlags::GUILD_CREATE
                        | EventTypeFlags::MEMBER_ADD
                        | EventTypeFlags::MEMBER_UPDATE
                        | EventTypeFlags::MEMBER_REMOVE
                        | EventTypeFlags::INTERACTION_CREATE,
                )
                .await
            {
                match item {
                    Ok(Event::GuildCreate(_)) => {
                        let _ = tx.send(true);
                    }
                    Ok(_) => {
                        let _ = tx.send(false);
                    }
                    Err(error) => eprintln!("shard {id}: {error}"),
                }
            }
        });
    }
    let started = Instant::now();
    let mut creates = 0;
    while creates < guilds {
        if rx.recv().await == Some(true) {
            creates += 1;
        }
    }
    println!(
        "{shards} shards received {guilds} GUILD_CREATEs in {:?}; simulator+clients RSS {:.0} MiB",
        started.elapsed(),
        rss_mib().unwrap_or(0.0)
    );

    let started = Instant::now();
    let run = sim.control().start_traffic(TrafficSpec {
        events: storm,
        mix: TrafficMix {
            member_join: 1,
            member_leave: 1,
            member_update: 3,
            interaction: 0,
        },
        ..TrafficSpec::default()
    });
    let mut received = 0;
    while received < storm {
        if rx.recv().await == Some(false) {
            received += 1;
        }
    }
    run.wait().await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "storm of {storm} member events delivered in {secs:.2} s ({:.0} events/s); RSS {:.0} MiB",
        storm as f64 / secs,
        rss_mib().unwrap_or(0.0)
    );
    sim.shutdown().await;
    Ok(())
}
