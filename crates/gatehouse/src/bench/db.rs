//! `gatehouse bench db`: virtual users running realistic tenant transactions
//! against many seeded communities, through PgBouncer by default.
//!
//! Each virtual user loops: pick a random community and member, then in one
//! tenant transaction read the member's profile and the enabled rules,
//! upsert the profile and append an audit row (each pair pipelined); then
//! think for 100 ms on average (50–150 ms by default, so users do not move
//! in lockstep). Every row read is checked to belong to the transaction's
//! tenant; any that does not is counted in `cross_tenant_rows`, which must
//! stay 0.

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;
use store::{
    repo::{AuditAction, AuditEntry, MemberUpsert},
    Store, StoreError, TenantId,
};
use tokio::task::JoinHandle;
use wire::{GuildId, UserId};

use super::{load_profile::LoadProfile, recorder::Recorder};
use crate::db_args::{explain, DbArgs};

#[derive(Debug, clap::Args)]
pub struct BenchDbArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Run the same load shape compressed into about 20 seconds.
    #[arg(long)]
    pub quick: bool,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Scale the profile so its peak is this many virtual users (default:
    /// the documented 200), to find what a machine sustains.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub peak_vus: Option<u32>,

    /// Communities to seed and spread the load over.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub communities: u32,

    /// Members seeded in each community.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub members: u32,

    /// Pause between one virtual user's transactions, on average.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub think_time: Duration,

    /// Spread of each pause around --think-time, as a fraction: 0.5 draws
    /// pauses uniformly from 50 % to 150 % of it; 0 makes them constant.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub think_jitter: f64,

    /// Threshold: p99 transaction latency must be below this.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,

    /// Threshold: percentage of transactions that must succeed.
    #[arg(long, default_value_t = 99.9)]
    pub min_success_percent: f64,

    /// Threshold: connection errors must be fewer than this.
    #[arg(long, default_value_t = 10)]
    pub error_budget: u64,
}

/// Seeded guild ids live far above real snowflakes of today so a bench run
/// against a shared database cannot collide with real communities.
const BENCH_GUILD_BASE: i64 = 8_000_000_000_000_000_000;
const BENCH_USER_BASE: i64 = 7_000_000_000_000_000_000;
const RULES_PER_COMMUNITY: i64 = 3;

pub async fn run(args: BenchDbArgs) -> anyhow::Result<ExitCode> {
    let mut profile = if args.quick {
        LoadProfile::quick()
    } else {
        LoadProfile::full()
    };
    if let Some(peak) = args.peak_vus {
        profile = profile.with_peak(peak);
    }
    let store = args.db.connect(64).await?;
    let target = store.config().redacted_url();
    eprintln!(
        "gatehouse bench db: {} profile, {:.0} s, up to {} virtual users, {} communities × {} members, via {target}",
        profile.name,
        profile.total().as_secs_f64(),
        profile.peak(),
        args.communities,
        args.members,
    );

    let tenants = seed(&store, args.communities, args.members)
        .await
        .map_err(|e| explain(e, "seeding bench communities"))?;
    warm_up(&store, &tenants)
        .await
        .map_err(|e| explain(e, "opening the bench's connections"))?;
    let report = drive(&store, &profile, Arc::new(tenants), &args).await;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1")),
    }
}

async fn seed(store: &Store, communities: u32, members: u32) -> Result<Vec<TenantId>, StoreError> {
    let mut tenants = Vec::with_capacity(communities as usize);
    for i in 0..i64::from(communities) {
        let guild = u64::try_from(BENCH_GUILD_BASE + i)
            .ok()
            .and_then(GuildId::new)
            .ok_or_else(|| StoreError::InvalidSetting {
                setting: "communities",
                reason: format!("no Discord id for bench community {i}"),
            })?;
        let tenant = store
            .directory()
            .provision_guild(guild, &format!("bench community {i}"))
            .await?;
        let tx = store.begin(tenant).await?;
        tx.seed()
            .members(BENCH_USER_BASE..=BENCH_USER_BASE + i64::from(members) - 1)
            .await?;
        tx.seed().score_rules(RULES_PER_COMMUNITY).await?;
        tx.commit().await?;
        tenants.push(tenant);
    }
    Ok(tenants)
}

/// Opens every connection of the pool (and, behind PgBouncer, its server
/// connections) before the clock starts, as a running worker's pool is:
/// the figures are for transactions, not for TCP and SCRAM handshakes.
async fn warm_up(store: &Store, tenants: &[TenantId]) -> Result<(), StoreError> {
    let Some(&tenant) = tenants.first() else {
        return Ok(());
    };
    let size = store.config().pool_size;
    let transactions = (0..size).map(|_| async move {
        let tx = store.begin(tenant).await?;
        // Hold every connection at once, so the pool has to open them all.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.commit().await
    });
    futures::future::try_join_all(transactions).await?;
    Ok(())
}

/// One virtual user's transaction. Returns how many rows it saw that belong
/// to another tenant (always 0 unless isolation is broken).
async fn transaction(store: &Store, tenant: TenantId, user: UserId) -> Result<u64, StoreError> {
    let tx = store.begin(tenant).await?;
    let mut foreign = 0u64;
    let mut check = |owner: TenantId| {
        if owner != tenant {
            foreign += 1;
        }
    };
    // Statements that do not depend on each other go out together:
    // tokio-postgres pipelines requests issued concurrently on one
    // connection, so each pair costs one round trip.
    let profiles = tx.profiles();
    let rules = tx.rules();
    let (existing, enabled) =
        tokio::try_join!(profiles.find_by_discord_user(user), rules.list_enabled())?;
    if let Some(p) = existing {
        check(p.community_id);
    }
    for rule in enabled {
        check(rule.community_id);
    }
    let member = MemberUpsert {
        discord_user_id: user,
        role_ids: Vec::new(),
        joined_at: Utc::now(),
    };
    let entry =
        AuditEntry::system(AuditAction::BenchVisit).target("discord_user", user.to_string());
    let audit_log = tx.audit();
    let (profile, audit) =
        tokio::try_join!(profiles.upsert_member(&member), audit_log.append(&entry))?;
    check(profile.community_id);
    check(audit.community_id);
    tx.commit().await?;
    Ok(foreign)
}

struct Shared {
    store: Store,
    tenants: Arc<Vec<TenantId>>,
    recorder: Recorder,
    target_vus: AtomicU32,
    members: u32,
    think_time: Duration,
    think_jitter: f64,
    errors_logged: AtomicU32,
}

/// A pause of `think` ± `jitter` (a fraction of it), uniformly drawn.
fn pause(rng: &mut SmallRng, think: Duration, jitter: f64) -> Duration {
    if jitter == 0.0 {
        return think;
    }
    think.mul_f64(rng.random_range(1.0 - jitter..=1.0 + jitter))
}

async fn virtual_user(shared: Arc<Shared>, index: u32) {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    // Users are started on the driver's 100 ms ticks, several per tick in a
    // steep ramp. With identical pauses they would stay in step and arrive
    // as bursts of simultaneous transactions, which measures the burst, not
    // the database; a random start within one pause and jittered pauses
    // keep their arrivals independent, as real members' are.
    tokio::time::sleep(shared.think_time.mul_f64(rng.random::<f64>())).await;
    while index < shared.target_vus.load(Ordering::Relaxed) {
        let tenant = shared.tenants[rng.random_range(0..shared.tenants.len())];
        let user_offset = i64::from(rng.random_range(0..shared.members));
        let Some(user) = u64::try_from(BENCH_USER_BASE + user_offset)
            .ok()
            .and_then(UserId::new)
        else {
            return;
        };
        let started = Instant::now();
        match transaction(&shared.store, tenant, user).await {
            Ok(foreign) => {
                shared.recorder.success(started.elapsed());
                if foreign > 0 {
                    shared
                        .recorder
                        .cross_tenant_rows
                        .fetch_add(foreign, Ordering::Relaxed);
                }
            }
            Err(e) => {
                let counter = if e.is_connection_error() {
                    &shared.recorder.connection_errors
                } else {
                    &shared.recorder.query_errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // Enough to diagnose, not enough to flood the terminal.
                if shared.errors_logged.fetch_add(1, Ordering::Relaxed) < 5 {
                    tracing::warn!(error = %e, "bench transaction failed");
                }
            }
        }
        tokio::time::sleep(pause(&mut rng, shared.think_time, shared.think_jitter)).await;
    }
}

async fn drive(
    store: &Store,
    profile: &LoadProfile,
    tenants: Arc<Vec<TenantId>>,
    args: &BenchDbArgs,
) -> Report {
    let shared = Arc::new(Shared {
        store: store.clone(),
        tenants,
        recorder: Recorder::new(),
        target_vus: AtomicU32::new(0),
        members: args.members,
        think_time: args.think_time,
        think_jitter: args.think_jitter,
        errors_logged: AtomicU32::new(0),
    });
    let total = profile.total();
    let bar = progress_bar(total);
    let mut slots: Vec<Option<JoinHandle<()>>> = (0..profile.peak()).map(|_| None).collect();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = Instant::now();
    let mut last_count = 0u64;
    let mut last_log = Instant::now();
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        let vus = profile.vus_at(elapsed);
        shared.target_vus.store(vus, Ordering::Relaxed);
        // A user whose index is at or above the target stops on its own;
        // start those below it that are not running.
        for (index, slot) in slots.iter_mut().enumerate().take(vus as usize) {
            if slot.as_ref().is_none_or(JoinHandle::is_finished) {
                *slot = Some(tokio::spawn(virtual_user(shared.clone(), index as u32)));
            }
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            let (p99, _) = shared.recorder.take_window();
            let count = shared.recorder.successes.load(Ordering::Relaxed);
            let rate = (count - last_count) as f64 / last_report.elapsed().as_secs_f64();
            last_count = count;
            last_report = Instant::now();
            let errors = shared.recorder.connection_errors.load(Ordering::Relaxed)
                + shared.recorder.query_errors.load(Ordering::Relaxed);
            let msg =
                format!("VUs {vus:>3} | {rate:>6.0} tx/s | p99 {p99:>6.2} ms | errors {errors}");
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(msg.clone());
            if bar.is_hidden() && last_log.elapsed() >= Duration::from_secs(5) {
                eprintln!("[{:>5.1} s] {msg}", elapsed.as_secs_f64());
                last_log = Instant::now();
            }
        }
    }
    shared.target_vus.store(0, Ordering::Relaxed);
    for handle in slots.into_iter().flatten() {
        // Users finish their current transaction and stop.
        let _ = handle.await;
    }
    let duration = started.elapsed();
    bar.finish_and_clear();
    Report::new(profile, args, &shared, duration)
}

fn progress_bar(total: Duration) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30.cyan/blue}] {percent:>3}% {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug, Serialize)]
struct Threshold {
    name: &'static str,
    limit: String,
    actual: String,
    passed: bool,
}

/// The figures of one run; also the JSON written by `--json`.
#[derive(Debug, Serialize)]
struct Report {
    profile: &'static str,
    target: String,
    duration_s: f64,
    peak_vus: u32,
    communities: u32,
    members_per_community: u32,
    /// Mean pause between a user's transactions, and its spread (a fraction).
    think_time_ms: f64,
    think_jitter: f64,
    transactions: u64,
    successes: u64,
    /// Fraction of transactions that committed, 0..=1.
    success_rate: f64,
    throughput_tps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    connection_errors: u64,
    query_errors: u64,
    cross_tenant_rows: u64,
    thresholds: Vec<Threshold>,
    passed: bool,
}

impl Report {
    fn new(profile: &LoadProfile, args: &BenchDbArgs, shared: &Shared, duration: Duration) -> Self {
        let r = &shared.recorder;
        let hist = r.snapshot();
        let ms = |micros: u64| micros as f64 / 1000.0;
        let successes = r.successes.load(Ordering::Relaxed);
        let connection_errors = r.connection_errors.load(Ordering::Relaxed);
        let query_errors = r.query_errors.load(Ordering::Relaxed);
        let cross_tenant_rows = r.cross_tenant_rows.load(Ordering::Relaxed);
        let transactions = successes + connection_errors + query_errors;
        let success_rate = if transactions == 0 {
            0.0
        } else {
            successes as f64 / transactions as f64
        };
        let p99_ms = ms(hist.value_at_quantile(0.99));
        let max_p99_ms = args.max_p99.as_secs_f64() * 1000.0;
        let thresholds = vec![
            Threshold {
                name: "p99 latency",
                limit: format!("< {max_p99_ms} ms"),
                actual: format!("{p99_ms:.2} ms"),
                passed: successes > 0 && p99_ms < max_p99_ms,
            },
            Threshold {
                name: "success rate",
                limit: format!("> {} %", args.min_success_percent),
                actual: format!("{:.3} %", success_rate * 100.0),
                passed: success_rate * 100.0 > args.min_success_percent,
            },
            Threshold {
                name: "connection errors",
                limit: format!("< {}", args.error_budget),
                actual: connection_errors.to_string(),
                passed: connection_errors < args.error_budget,
            },
            Threshold {
                name: "query errors",
                limit: format!("< {}", args.error_budget),
                actual: query_errors.to_string(),
                passed: query_errors < args.error_budget,
            },
            Threshold {
                name: "cross-tenant rows",
                limit: "= 0".into(),
                actual: cross_tenant_rows.to_string(),
                passed: cross_tenant_rows == 0,
            },
        ];
        let passed = thresholds.iter().all(|t| t.passed);
        Report {
            profile: profile.name,
            target: shared.store.config().redacted_url(),
            duration_s: duration.as_secs_f64(),
            peak_vus: profile.peak(),
            communities: args.communities,
            members_per_community: args.members,
            think_time_ms: args.think_time.as_secs_f64() * 1000.0,
            think_jitter: args.think_jitter,
            transactions,
            successes,
            success_rate,
            throughput_tps: successes as f64 / duration.as_secs_f64(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p95_ms: ms(hist.value_at_quantile(0.95)),
            p99_ms,
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
            connection_errors,
            query_errors,
            cross_tenant_rows,
            thresholds,
            passed,
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ngatehouse bench db — {} profile against {}",
            self.profile, self.target
        );
        let _ = writeln!(
            out,
            "  transactions   {} in {:.1} s ({:.1} tx/s), peak {} virtual users",
            self.transactions, self.duration_s, self.throughput_tps, self.peak_vus
        );
        let _ = writeln!(
            out,
            "  latency        p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms   mean {:.2} ms",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.mean_ms
        );
        let _ = writeln!(
            out,
            "  outcomes       {:.3} % committed, {} connection errors, {} query errors, {} cross-tenant rows",
            self.success_rate * 100.0,
            self.connection_errors,
            self.query_errors,
            self.cross_tenant_rows
        );
        let _ = writeln!(out, "  thresholds");
        for t in &self.thresholds {
            let _ = writeln!(
                out,
                "    {} {:<18} {:>12}  (limit {})",
                if t.passed { "PASS" } else { "FAIL" },
                t.name,
                t.actual,
                t.limit
            );
        }
        let _ = writeln!(
            out,
            "  result         {}",
            if self.passed { "PASSED" } else { "FAILED" }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_spread_around_the_think_time_and_jitter_zero_is_constant() {
        let mut rng = SmallRng::seed_from_u64(7);
        let think = Duration::from_millis(100);
        let pauses: Vec<Duration> = (0..1000).map(|_| pause(&mut rng, think, 0.5)).collect();
        let (min, max) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(*min >= Duration::from_millis(50) && *max <= Duration::from_millis(150));
        assert!(
            max.saturating_sub(*min) > Duration::from_millis(80),
            "no spread"
        );
        let mean = pauses.iter().sum::<Duration>() / 1000;
        assert!(
            mean.abs_diff(think) < Duration::from_millis(5),
            "mean {mean:?}"
        );
        assert_eq!(pause(&mut rng, think, 0.0), think);
    }

    #[test]
    fn think_jitter_must_be_a_fraction() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("lots").is_err());
    }
}
