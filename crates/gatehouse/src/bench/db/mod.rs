//! `gatehouse bench db`: the tenant transaction against many seeded
//! communities, through PgBouncer by default.
//!
//! Each transaction picks a random community and member, then in one
//! tenant transaction reads the member's profile and the enabled rules,
//! upserts the profile and appends an audit row (each pair pipelined).
//! Every row read is checked to belong to the transaction's tenant; any that
//! does not is counted in `cross_tenant_rows`, which must stay 0.
//!
//! Two profiles:
//! * `compare` (the default) measures the transaction against what the
//!   database and PgBouncer serve to a client that adds nothing: pgbench
//!   running the same transaction (`deploy/bench/tenant_tx.pgbench`) with
//!   the same clients through the same PgBouncer, in the same run. At full
//!   speed (`tps_ratio_vs_pgbench`), without row-level security on a
//!   throwaway copy of the database (`rls_overhead_pct`), and at fixed
//!   offered rates (`max_rate_p99_under_10ms`, `max_rate_ratio_vs_pgbench`).
//! * `seed` is the virtual-user load shape of the project's brief: 100 users
//!   steady, a 200-user spike, think time between transactions; it enforces
//!   `--max-p99` and reports `p99_ms`.
//!
//! Both enforce the correctness thresholds (committed share, error budgets,
//! zero cross-tenant rows); speed figures of `compare` are reported, not
//! enforced: they are ratios for a person to read, not test verdicts.

mod closed_loop;
mod compare;
// pgbench through the same PgBouncer, on the bench communities: also the
// database ceiling of `bench pipeline`.
pub(super) mod conninfo;
pub(super) mod pgbench;
mod rate_steps;
mod report;
mod rls_copy;
mod seed_profile;
pub(super) mod workload;

use std::{
    io::IsTerminal, path::PathBuf, process::ExitCode, sync::atomic::Ordering, time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use settings::Secret;

use super::recorder::Recorder;
use crate::db_args::DbArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Gatehouse beside pgbench: full speed, RLS off, open-loop rate steps.
    Compare,
    /// Virtual users with think time: 100 steady, a 200-user spike.
    Seed,
}

#[derive(Debug, clap::Args)]
pub struct BenchDbArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// What to measure: `compare` (Gatehouse beside pgbench) or `seed` (the
    /// virtual-user profile with its p99 threshold).
    #[arg(long, value_enum, default_value_t = Profile::Compare)]
    pub profile: Profile,

    /// A short run, as CI smoke-tests it: `compare` in about 30 s (one
    /// round, two rate steps), `seed` compressed into about 20 s.
    #[arg(long)]
    pub quick: bool,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also draw the figures as an SVG (`compare`: p99 against offered
    /// rate, and throughput, Gatehouse beside pgbench).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Communities to seed and spread the load over.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub communities: u32,

    /// Members seeded in each community.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub members: u32,

    /// `compare`: concurrent clients, for Gatehouse (its pool) and for
    /// pgbench (`-c`) alike.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub clients: u32,

    /// `compare`: length of each full-speed run [default: 6 s; --quick: 3 s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub full_speed_for: Option<Duration>,

    /// `compare`: full-speed rounds, each running Gatehouse, pgbench and
    /// Gatehouse without RLS once, in turns; the ratios are the median of
    /// the rounds' [default: 5; --quick: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: Option<u32>,

    /// `compare`: offered rates of the open-loop steps, transactions/s
    /// [default: 100,250,500,750,1000,1250,1500,2000; --quick: 250,500].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rates: Vec<u32>,

    /// `compare`: length of each rate step [default: 10 s; --quick: 2 s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step_for: Option<Duration>,

    /// `compare`: a PostgreSQL role that may create databases and end
    /// sessions (the superuser of `scripts/stack`), direct to PostgreSQL,
    /// for the throwaway copy without row-level security. Unset:
    /// `rls_overhead_pct` is left out of the report.
    #[arg(long, env = "GATEHOUSE_ADMIN_URL", hide_env_values = true)]
    pub admin_url: Option<Secret>,

    /// `compare`: the pgbench to run.
    #[arg(long, default_value = "pgbench", value_name = "PATH")]
    pub pgbench: PathBuf,

    /// `seed`: scale the profile so its peak is this many virtual users
    /// (default: the documented 200), to find what a machine sustains.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub peak_vus: Option<u32>,

    /// `seed`: pause between one virtual user's transactions, on average.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub think_time: Duration,

    /// `seed`: spread of each pause around --think-time, as a fraction: 0.5
    /// draws pauses uniformly from 50 % to 150 % of it; 0 makes them
    /// constant.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub think_jitter: f64,

    /// `seed` threshold: p99 transaction latency must be below this
    /// [default: 10ms]. `compare` enforces no speed threshold.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_p99: Option<Duration>,

    /// Threshold: percentage of Gatehouse's transactions that must commit.
    #[arg(long, default_value_t = 99.9)]
    pub min_success_percent: f64,

    /// Threshold: connection errors, and query errors, must each be fewer
    /// than this.
    #[arg(long, default_value_t = 10)]
    pub error_budget: u64,
}

pub async fn run(args: BenchDbArgs) -> anyhow::Result<ExitCode> {
    match args.profile {
        Profile::Seed => seed_profile::run(args).await,
        Profile::Compare => {
            // A latency bound on a closed loop at full speed measures the
            // queue the loop builds, not the transaction: refuse it rather
            // than ignore it silently.
            anyhow::ensure!(
                args.max_p99.is_none(),
                "--max-p99 is a threshold of `--profile seed`; the compare profile reports \
                 latency against pgbench and enforces none"
            );
            compare::run(args).await
        }
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1")),
    }
}

/// A progress bar on a terminal; hidden (and the caller prints a line per
/// step instead) when stderr is a log.
pub(super) fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Moves `bar` from `base` (ms) while a Gatehouse run of `length` goes on,
/// with its live throughput and p99; returns when the run's time is up.
async fn show_progress(
    bar: &ProgressBar,
    base: u64,
    started: tokio::time::Instant,
    length: Duration,
    recorder: &Recorder,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (started, 0u64);
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(started);
        bar.set_position(base + elapsed.min(length).as_millis() as u64);
        if elapsed >= length {
            return;
        }
        if now.duration_since(last.0) >= Duration::from_millis(500) {
            let count = recorder.successes.load(Ordering::Relaxed);
            let rate = (count - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            let (p99, _) = recorder.take_window();
            bar.set_message(format!("Gatehouse: {rate:>6.0} tx/s, p99 {p99:>6.2} ms"));
            last = (now, count);
        }
    }
}

#[derive(Debug, Serialize)]
struct Threshold {
    name: &'static str,
    limit: String,
    actual: String,
    passed: bool,
}

/// Gatehouse's outcomes over a run: what the correctness thresholds judge.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Outcomes {
    transactions: u64,
    successes: u64,
    /// Fraction of transactions that committed, 0..=1.
    success_rate: f64,
    connection_errors: u64,
    query_errors: u64,
    cross_tenant_rows: u64,
}

impl Outcomes {
    fn of(r: &Recorder) -> Outcomes {
        Outcomes::default().plus(r)
    }

    /// These outcomes and `r`'s together.
    fn plus(self, r: &Recorder) -> Outcomes {
        let successes = self.successes + r.successes.load(Ordering::Relaxed);
        let connection_errors =
            self.connection_errors + r.connection_errors.load(Ordering::Relaxed);
        let query_errors = self.query_errors + r.query_errors.load(Ordering::Relaxed);
        let transactions = successes + connection_errors + query_errors;
        Outcomes {
            transactions,
            successes,
            success_rate: if transactions == 0 {
                0.0
            } else {
                successes as f64 / transactions as f64
            },
            connection_errors,
            query_errors,
            cross_tenant_rows: self.cross_tenant_rows + r.cross_tenant_rows.load(Ordering::Relaxed),
        }
    }

    /// Committed share, error budgets and isolation: enforced by every
    /// profile, in CI too.
    fn thresholds(&self, args: &BenchDbArgs) -> Vec<Threshold> {
        vec![
            Threshold {
                name: "success rate",
                limit: format!("> {} %", args.min_success_percent),
                actual: format!("{:.3} %", self.success_rate * 100.0),
                passed: self.success_rate * 100.0 > args.min_success_percent,
            },
            Threshold {
                name: "connection errors",
                limit: format!("< {}", args.error_budget),
                actual: self.connection_errors.to_string(),
                passed: self.connection_errors < args.error_budget,
            },
            Threshold {
                name: "query errors",
                limit: format!("< {}", args.error_budget),
                actual: self.query_errors.to_string(),
                passed: self.query_errors < args.error_budget,
            },
            Threshold {
                name: "cross-tenant rows",
                limit: "= 0".into(),
                actual: self.cross_tenant_rows.to_string(),
                passed: self.cross_tenant_rows == 0,
            },
        ]
    }
}

fn render_thresholds(out: &mut String, thresholds: &[Threshold]) {
    use std::fmt::Write;
    for t in thresholds {
        let _ = writeln!(
            out,
            "    {} {:<18} {:>12}  (limit {})",
            if t.passed { "PASS" } else { "FAIL" },
            t.name,
            t.actual,
            t.limit
        );
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_jitter_must_be_a_fraction() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("lots").is_err());
    }

    #[test]
    fn outcomes_add_up_and_isolation_failures_fail_the_run() {
        let a = Recorder::new();
        for _ in 0..999 {
            a.success(Duration::from_millis(1));
        }
        let b = Recorder::new();
        b.query_errors.fetch_add(1, Ordering::Relaxed);
        b.cross_tenant_rows.fetch_add(2, Ordering::Relaxed);
        let o = Outcomes::of(&a).plus(&b);
        assert_eq!(
            (o.transactions, o.successes, o.query_errors),
            (1000, 999, 1)
        );
        assert!((o.success_rate - 0.999).abs() < 1e-9);
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchDbArgs,
        }
        let args = Cli::parse_from(["bench", "--min-success-percent", "99"]).args;
        let failed: Vec<_> = o
            .thresholds(&args)
            .into_iter()
            .filter(|t| !t.passed)
            .map(|t| t.name)
            .collect();
        assert_eq!(failed, ["cross-tenant rows"]);
    }
}
