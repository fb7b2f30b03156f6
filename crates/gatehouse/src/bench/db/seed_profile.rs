//! `--profile seed`: virtual users with think time, in the load shape of the
//! project's brief (100 users steady, a 200-user spike), held to
//! `--max-p99`.
//!
//! Each virtual user loops: one tenant transaction, then a pause of
//! `--think-time` on average (50–150 ms by default, so users do not move in
//! lockstep).

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;
use store::Store;
use tokio::task::JoinHandle;

use super::{
    super::{load_profile::LoadProfile, machine::Machine, plot, recorder::Recorder},
    ms, progress_bar, render_thresholds,
    workload::{self, Tenants},
    BenchDbArgs, Outcomes, Threshold,
};
use crate::db_args::explain;

const DEFAULT_MAX_P99: Duration = Duration::from_millis(10);

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
        "gatehouse bench db: seed profile ({}), {:.0} s, up to {} virtual users, {} communities × {} members, via {target}",
        profile.name,
        profile.total().as_secs_f64(),
        profile.peak(),
        args.communities,
        args.members,
    );

    let tenants = workload::seed(&store, args.communities, args.members)
        .await
        .map_err(|e| explain(e, "seeding bench communities"))?;
    workload::warm_up(&store, &tenants)
        .await
        .map_err(|e| explain(e, "opening the bench's connections"))?;
    let report = drive(&store, &profile, Arc::new(tenants), &args).await;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        super::super::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        plot::write_svg(path, &report.charts())?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Shared {
    store: Store,
    tenants: Arc<Tenants>,
    recorder: Recorder,
    target_vus: AtomicU32,
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
        let Some((tenant, user)) = shared.tenants.pick(&mut rng) else {
            return;
        };
        let started = Instant::now();
        let outcome = workload::transaction(&shared.store, tenant, user).await;
        workload::record(
            &shared.recorder,
            &shared.errors_logged,
            started.elapsed(),
            outcome,
        );
        tokio::time::sleep(pause(&mut rng, shared.think_time, shared.think_jitter)).await;
    }
}

async fn drive(
    store: &Store,
    profile: &LoadProfile,
    tenants: Arc<Tenants>,
    args: &BenchDbArgs,
) -> SeedReport {
    let shared = Arc::new(Shared {
        store: store.clone(),
        tenants,
        recorder: Recorder::new(),
        target_vus: AtomicU32::new(0),
        think_time: args.think_time,
        think_jitter: args.think_jitter,
        errors_logged: AtomicU32::new(0),
    });
    let total = profile.total();
    let bar = progress_bar(
        total.as_millis() as u64,
        "{spinner} [{elapsed_precise}] [{bar:30.cyan/blue}] {percent:>3}% {msg}",
    );
    let mut slots: Vec<Option<JoinHandle<()>>> = (0..profile.peak()).map(|_| None).collect();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = Instant::now();
    let mut last_count = 0u64;
    let mut last_log = Instant::now();
    let mut windows = Vec::new();
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
            windows.push(Window {
                at_s: elapsed.as_secs_f64(),
                vus,
                tps: rate,
                p99_ms: p99,
            });
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
    SeedReport::new(profile, args, &shared, duration, windows)
}

/// Half a second of the run, as the progress line showed it.
#[derive(Debug, Serialize)]
struct Window {
    /// Seconds from the start to the end of the window.
    at_s: f64,
    vus: u32,
    tps: f64,
    p99_ms: f64,
}

/// The figures of one run; also the JSON written by `--json`.
#[derive(Debug, Serialize)]
struct SeedReport {
    /// Always "seed".
    profile: &'static str,
    /// The load shape: "full" or "quick" (compressed).
    shape: &'static str,
    machine: Machine,
    target: String,
    duration_s: f64,
    peak_vus: u32,
    communities: u32,
    members_per_community: u32,
    /// Mean pause between a user's transactions, and its spread (a fraction).
    think_time_ms: f64,
    think_jitter: f64,
    #[serde(flatten)]
    outcomes: Outcomes,
    throughput_tps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    thresholds: Vec<Threshold>,
    passed: bool,
    /// The run in half-second windows (throughput, p99, virtual users).
    windows: Vec<Window>,
    #[serde(skip)]
    max_p99_ms: f64,
}

impl SeedReport {
    fn new(
        profile: &LoadProfile,
        args: &BenchDbArgs,
        shared: &Shared,
        duration: Duration,
        windows: Vec<Window>,
    ) -> Self {
        let hist = shared.recorder.snapshot();
        let outcomes = Outcomes::of(&shared.recorder);
        let p99_ms = ms(hist.value_at_quantile(0.99));
        let max_p99_ms = args.max_p99.unwrap_or(DEFAULT_MAX_P99).as_secs_f64() * 1000.0;
        let mut thresholds = vec![Threshold {
            name: "p99 latency",
            limit: format!("< {max_p99_ms} ms"),
            actual: format!("{p99_ms:.2} ms"),
            passed: outcomes.successes > 0 && p99_ms < max_p99_ms,
        }];
        thresholds.extend(outcomes.thresholds(args));
        let passed = thresholds.iter().all(|t| t.passed);
        SeedReport {
            profile: "seed",
            shape: profile.name,
            machine: Machine::here(),
            target: shared.store.config().redacted_url(),
            duration_s: duration.as_secs_f64(),
            peak_vus: profile.peak(),
            communities: args.communities,
            members_per_community: args.members,
            think_time_ms: args.think_time.as_secs_f64() * 1000.0,
            think_jitter: args.think_jitter,
            outcomes,
            throughput_tps: outcomes.successes as f64 / duration.as_secs_f64(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p95_ms: ms(hist.value_at_quantile(0.95)),
            p99_ms,
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
            thresholds,
            passed,
            windows,
            max_p99_ms,
        }
    }

    /// p99 and throughput over the run, beside the p99 threshold and the
    /// virtual users driving it.
    fn charts(&self) -> Vec<plot::Chart> {
        let points = |f: fn(&Window) -> f64| self.windows.iter().map(|w| (w.at_s, f(w))).collect();
        vec![
            plot::Chart::new(
                format!(
                    "bench db, seed profile ({}): p99 per half second",
                    self.shape
                ),
                "seconds",
                "p99 ms",
            )
            .series("Gatehouse p99", points(|w| w.p99_ms))
            .limit(format!("--max-p99 {} ms", self.max_p99_ms), self.max_p99_ms)
            .log_y(),
            plot::Chart::new(
                "throughput and load",
                "seconds",
                "transactions/s, virtual users",
            )
            .series("transactions/s", points(|w| w.tps))
            .series("virtual users", points(|w| f64::from(w.vus))),
        ]
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ngatehouse bench db — seed profile ({}) against {}",
            self.shape, self.target
        );
        let _ = writeln!(
            out,
            "  machine        {} cores, {:.1} GiB",
            self.machine.cores, self.machine.memory_gib
        );
        let _ = writeln!(
            out,
            "  transactions   {} in {:.1} s ({:.1} tx/s), peak {} virtual users",
            self.outcomes.transactions, self.duration_s, self.throughput_tps, self.peak_vus
        );
        let _ = writeln!(
            out,
            "  latency        p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms   mean {:.2} ms",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.mean_ms
        );
        let _ = writeln!(
            out,
            "  outcomes       {:.3} % committed, {} connection errors, {} query errors, {} cross-tenant rows",
            self.outcomes.success_rate * 100.0,
            self.outcomes.connection_errors,
            self.outcomes.query_errors,
            self.outcomes.cross_tenant_rows
        );
        let _ = writeln!(out, "  thresholds");
        render_thresholds(&mut out, &self.thresholds);
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
}
