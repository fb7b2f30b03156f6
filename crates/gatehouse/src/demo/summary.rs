//! Live progress and the closing summary of the demo, both read from the
//! database (as the runtime role, one tenant transaction per community) and
//! checked against the simulator.

use std::collections::{BTreeMap, HashSet};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use store::Store;
use wire::{GuildId, UserId};

use super::scenario::{Community, TrafficReport, World};

/// Counters across all communities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub profiles: u64,
    pub wallets: u64,
    pub granted: u64,
    pub removed: u64,
    pub badges: u64,
    pub dead_letters: u64,
    /// Messages the worker has not finished, per stream.
    pub events_pending: u64,
    pub checks_pending: u64,
}

impl Snapshot {
    /// Settled: the worker has finished every message it was given.
    pub fn settled(&self) -> bool {
        self.events_pending == 0 && self.checks_pending == 0
    }
}

pub async fn snapshot(
    store: &Store,
    communities: &[Community],
    world: &World,
) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot::default();
    for c in communities {
        let tx = store.begin(c.tenant).await?;
        let counts = tx.stats().counts().await?;
        tx.commit().await?;
        s.profiles += count(counts.profiles);
        s.wallets += count(counts.wallets);
        s.granted += count(counts.roles_granted);
        s.removed += count(counts.roles_removed);
        s.badges += count(counts.badge_awards);
    }
    s.dead_letters = dead_letters(world).await.values().sum();
    s.events_pending = world.pending(&wire::subjects::EVENTS).await;
    s.checks_pending = world.pending(&wire::subjects::ELIGIBILITY).await;
    Ok(s)
}

/// Dead letters per guild id (`None` for ones without a readable guild).
async fn dead_letters(world: &World) -> BTreeMap<Option<GuildId>, u64> {
    use futures::StreamExt;
    let mut out = BTreeMap::new();
    let Ok(stream) = world
        .jetstream()
        .get_stream(world.dead_letter_stream())
        .await
    else {
        return out;
    };
    let Ok(consumer) = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            inactive_threshold: std::time::Duration::from_secs(5),
            ..Default::default()
        })
        .await
    else {
        return out;
    };
    let Ok(mut batch) = consumer
        .fetch()
        .max_messages(10_000)
        .expires(std::time::Duration::from_millis(200))
        .messages()
        .await
    else {
        return out;
    };
    while let Some(Ok(m)) = batch.next().await {
        let guild = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()
            .and_then(|v| {
                v.get("guild_id")
                    .and_then(|g| g.as_str())
                    .and_then(|g| g.parse().ok())
            });
        *out.entry(guild).or_insert(0) += 1;
    }
    out
}

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(members: u64) -> Self {
        let bar = ProgressBar::new(members);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] members {pos}/{len} {bar:25.cyan/blue} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    pub fn update(&self, s: &Snapshot) {
        self.bar.set_position(s.profiles);
        let msg = format!(
            "| wallets {} | roles +{} -{} | badges {} | dead letters {} | queued: events {} checks {}",
            s.wallets, s.granted, s.removed, s.badges, s.dead_letters, s.events_pending, s.checks_pending
        );
        if self.bar.is_hidden() {
            eprintln!("members {} {msg}", s.profiles);
        }
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[derive(Debug, Serialize)]
pub struct CommunityRow {
    pub guild_id: String,
    pub members: u64,
    pub wallets: u64,
    pub eligible: u64,
    pub roles_synced: u64,
    pub roles_removed: u64,
    pub badges: u64,
    pub dead_letters: u64,
    /// Members whose holder role in the simulator matches the database.
    pub consistent: bool,
    /// Members holding the role in Discord that the database says should not, and the reverse.
    pub only_in_discord: Vec<String>,
    pub only_in_database: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The build that ran (see [`build_profile`]).
    pub build: String,
    pub communities: Vec<CommunityRow>,
    pub traffic: TrafficReport,
    /// Simulator added the member → worker committed the profile.
    pub join_latency_p50_ms: f64,
    pub join_latency_p99_ms: f64,
    pub consistent: bool,
}

pub async fn report(
    store: &Store,
    communities: &[Community],
    world: &World,
    traffic: TrafficReport,
) -> anyhow::Result<Report> {
    let dead = dead_letters(world).await;
    let mut rows = Vec::new();
    let mut latencies = Vec::new();
    for c in communities {
        let tx = store.begin(c.tenant).await?;
        let counts = tx.stats().counts().await?;
        // Who should hold the holder role, by the database's last decision.
        let holders: HashSet<UserId> = tx
            .stats()
            .eligible_members(c.holder_rule)
            .await?
            .into_iter()
            .collect();
        let lat = tx.stats().join_latencies_ms().await?;
        tx.commit().await?;
        latencies.extend(lat);
        let in_sim: HashSet<UserId> = world
            .sim
            .control()
            .members(c.guild)?
            .into_iter()
            .filter(|m| m.roles.contains(&c.holder_role))
            .map(|m| m.user_id)
            .collect();
        rows.push(CommunityRow {
            guild_id: c.guild.to_string(),
            members: count(counts.present),
            wallets: count(counts.wallets),
            eligible: count(counts.eligible),
            roles_synced: count(counts.roles_granted),
            roles_removed: count(counts.roles_removed),
            badges: count(counts.badge_awards),
            dead_letters: dead.get(&Some(c.guild)).copied().unwrap_or(0),
            consistent: in_sim == holders,
            only_in_discord: in_sim
                .difference(&holders)
                .map(std::string::ToString::to_string)
                .collect(),
            only_in_database: holders
                .difference(&in_sim)
                .map(std::string::ToString::to_string)
                .collect(),
        });
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    let consistent = rows.iter().all(|r| r.consistent);
    Ok(Report {
        build: build_profile(),
        join_latency_p50_ms: pct(0.50),
        join_latency_p99_ms: pct(0.99),
        communities: rows,
        traffic,
        consistent,
    })
}

impl Report {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ngatehouse demo — summary (build: {})",
            build_profile()
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>6}  roles match Discord",
            "community (guild)",
            "members",
            "wallets",
            "eligible",
            "granted",
            "removed",
            "badges",
            "dead"
        );
        for r in &self.communities {
            let _ = writeln!(
                out,
                "  {:<20} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>6}  {}",
                r.guild_id,
                r.members,
                r.wallets,
                r.eligible,
                r.roles_synced,
                r.roles_removed,
                r.badges,
                r.dead_letters,
                if r.consistent { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(
            out,
            "  scenario: {} joined, {} wallets linked, {} balances dropped, {} left",
            self.traffic.joined,
            self.traffic.wallets_linked,
            self.traffic.balances_dropped,
            self.traffic.left
        );
        let _ = writeln!(
            out,
            "  join → committed latency: p50 {:.1} ms, p99 {:.1} ms",
            self.join_latency_p50_ms, self.join_latency_p99_ms
        );
        let _ = writeln!(
            out,
            "  result: {}",
            if self.consistent {
                "every community's roles in Discord match the database"
            } else {
                "MISMATCH between Discord roles and the database"
            }
        );
        out
    }
}

/// The Cargo profile this binary was built with, and whether it is
/// optimised: the demo's latencies mean little without it. `debug` is the
/// dev profile's directory.
pub fn build_profile() -> String {
    let profile = env!("GATEHOUSE_BUILD_PROFILE");
    let optimised = if cfg!(debug_assertions) {
        "unoptimised"
    } else {
        "optimised"
    };
    format!("{profile}, {optimised}")
}

/// A count from the database (never negative) as the report's unsigned.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
