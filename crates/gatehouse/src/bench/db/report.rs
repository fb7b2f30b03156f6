//! The figures of a compare run: each side's throughput and latency, the
//! ratios the targets are set on, the terminal table and the charts.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    super::{machine::Machine, plot},
    closed_loop::Measured,
    compare::Plan,
    ms, pgbench,
    rate_steps::{self, P99_LIMIT_MS},
    render_thresholds, BenchDbArgs, Outcomes, Threshold,
};

const TARGET_TPS_RATIO: f64 = 0.9;
const TARGET_RLS_OVERHEAD_PCT: f64 = 10.0;
const TARGET_RATE_RATIO: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Side {
    Gatehouse,
    Pgbench,
    GatehouseRlsOff,
}

impl Side {
    pub(super) fn label(self) -> &'static str {
        match self {
            Side::Gatehouse => "Gatehouse",
            Side::Pgbench => "pgbench",
            Side::GatehouseRlsOff => "Gatehouse, RLS off",
        }
    }
}

/// One side's figures over a run or a set of runs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Figures {
    /// Committed transactions.
    transactions: u64,
    /// Transactions that failed (errors; pgbench's failed count).
    failed: u64,
    seconds: f64,
    /// Committed transactions per second (for pgbench, its own `tps`,
    /// which leaves out connecting).
    pub(super) tps: f64,
    p50_ms: f64,
    pub(super) p99_ms: f64,
    max_ms: f64,
    #[serde(skip)]
    latency: Histogram<u64>,
}

impl Figures {
    pub(super) fn gatehouse(m: &Measured) -> Figures {
        let o = Outcomes::of(&m.recorder);
        let seconds = m.elapsed.as_secs_f64();
        Figures::with_latency(
            m.recorder.snapshot(),
            o.successes,
            o.connection_errors + o.query_errors,
            seconds,
            o.successes as f64 / seconds.max(1e-9),
        )
    }

    pub(super) fn pgbench(run: pgbench::Run, seconds: u64) -> Figures {
        Figures::with_latency(
            run.latency,
            run.summary.processed,
            run.summary.failed,
            seconds as f64,
            run.summary.tps,
        )
    }

    fn with_latency(
        latency: Histogram<u64>,
        transactions: u64,
        failed: u64,
        seconds: f64,
        tps: f64,
    ) -> Figures {
        Figures {
            transactions,
            failed,
            seconds,
            tps,
            p50_ms: ms(latency.value_at_quantile(0.50)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            max_ms: ms(latency.max()),
            latency,
        }
    }

    /// Several runs as one: their mean throughput, and percentiles over all
    /// their transactions.
    fn combine(runs: &[&Figures]) -> Option<Figures> {
        let first = runs.first()?;
        let mut latency = first.latency.clone();
        for r in &runs[1..] {
            // Same bounds everywhere (1 µs – 60 s), so adding cannot fail.
            let _ = latency.add(&r.latency);
        }
        Some(Figures::with_latency(
            latency,
            runs.iter().map(|r| r.transactions).sum(),
            runs.iter().map(|r| r.failed).sum(),
            runs.iter().map(|r| r.seconds).sum(),
            runs.iter().map(|r| r.tps).sum::<f64>() / runs.len() as f64,
        ))
    }
}

#[derive(Debug, Serialize)]
pub(super) struct RunRow {
    pub(super) round: u32,
    pub(super) side: Side,
    #[serde(flatten)]
    pub(super) figures: Figures,
}

#[derive(Debug, Serialize)]
pub(super) struct StepRow {
    pub(super) offered_per_s: u32,
    /// `None`: the side had stopped (two failed steps in a row).
    pub(super) gatehouse: Option<Figures>,
    pub(super) pgbench: Option<Figures>,
}

/// Everything `measure` collects.
pub(super) struct Measurements {
    pub(super) target: String,
    pub(super) runs: Vec<RunRow>,
    pub(super) steps: Vec<StepRow>,
    pub(super) outcomes: Outcomes,
    pub(super) rls_off_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct FullSpeed {
    seconds_per_run: u64,
    rounds: u32,
    gatehouse: Option<Figures>,
    pgbench: Option<Figures>,
    gatehouse_rls_off: Option<Figures>,
    runs: Vec<RunRow>,
}

#[derive(Debug, Serialize)]
struct RateSteps {
    seconds_per_step: u64,
    p99_limit_ms: f64,
    steps: Vec<StepRow>,
}

#[derive(Debug, Serialize)]
struct MaxRates {
    gatehouse: Option<u32>,
    pgbench: Option<u32>,
}

/// A speed target, printed beside its figure; not enforced.
#[derive(Debug, Serialize)]
struct SpeedTarget {
    name: &'static str,
    target: String,
    value: Option<f64>,
    /// `None` when the figure was not measured.
    met: Option<bool>,
}

/// The figures of one run; also the JSON written by `--json`.
#[derive(Debug, Serialize)]
pub(super) struct CompareReport {
    /// Always "compare".
    profile: &'static str,
    quick: bool,
    machine: Machine,
    /// The Cargo profile this binary was built with: a debug build's
    /// client is slower than the product's.
    build: &'static str,
    target: String,
    pgbench_version: String,
    clients: u32,
    pgbench_threads: u32,
    communities: u32,
    members_per_community: u32,
    full_speed: FullSpeed,
    /// Gatehouse's full-speed throughput ÷ pgbench's: the median over the
    /// rounds of each round's ratio. Target ≥ 0.9.
    tps_ratio_vs_pgbench: Option<f64>,
    /// How much more throughput Gatehouse has with row-level security off
    /// than on, in percent: (tps off ÷ tps on − 1) × 100, the extra time
    /// per transaction the policies cost; median over the rounds like
    /// `tps_ratio_vs_pgbench`. Target ≤ 10.
    rls_overhead_pct: Option<f64>,
    rate_steps: RateSteps,
    /// The highest offered rate whose p99 (from the scheduled start) stayed
    /// under 10 ms while keeping up with the rate.
    max_rate_p99_under_10ms: MaxRates,
    /// Gatehouse's ÷ pgbench's. Target ≥ 0.9.
    max_rate_ratio_vs_pgbench: Option<f64>,
    targets: Vec<SpeedTarget>,
    notes: Vec<String>,
    /// Over every Gatehouse transaction of the run (both databases).
    #[serde(flatten)]
    outcomes: Outcomes,
    thresholds: Vec<Threshold>,
    pub(super) passed: bool,
}

/// `a`'s throughput ÷ `b`'s within each round, and the median of those.
///
/// A round runs its sides back to back, so within it they share the
/// machine's state; across rounds a neighbour's build comes and goes. The
/// median of the rounds' ratios keeps one disturbed run from moving the
/// figure, as a ratio of whole-run means would not.
fn median_round_ratio(runs: &[RunRow], a: Side, b: Side) -> Option<f64> {
    let tps = |round: u32, side: Side| {
        runs.iter()
            .find(|r| r.round == round && r.side == side)
            .map(|r| r.figures.tps)
    };
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.dedup();
    let mut ratios: Vec<f64> = rounds
        .into_iter()
        .filter_map(|round| ratio(tps(round, a), tps(round, b)))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(ratios[n / 2]),
        _ => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Gatehouse's max rate ÷ pgbench's. A side that passed no step has 0; if
/// pgbench passed none, there is nothing to compare against.
fn rate_ratio(gatehouse: Option<u32>, pgbench: Option<u32>) -> Option<f64> {
    let pgbench = f64::from(pgbench?);
    Some(f64::from(gatehouse.unwrap_or(0)) / pgbench)
}

impl CompareReport {
    pub(super) fn new(
        args: &BenchDbArgs,
        plan: &Plan,
        pgbench_version: String,
        rls_note: Option<String>,
        m: Measurements,
    ) -> CompareReport {
        let of = |side: Side| {
            let runs: Vec<&Figures> = m
                .runs
                .iter()
                .filter(|r| r.side == side)
                .map(|r| &r.figures)
                .collect();
            Figures::combine(&runs)
        };
        let gatehouse = of(Side::Gatehouse);
        let pgbench = of(Side::Pgbench);
        let gatehouse_rls_off = of(Side::GatehouseRlsOff);
        let tps_ratio_vs_pgbench = median_round_ratio(&m.runs, Side::Gatehouse, Side::Pgbench);
        let rls_overhead_pct = median_round_ratio(&m.runs, Side::GatehouseRlsOff, Side::Gatehouse)
            .map(|r| (r - 1.0) * 100.0);

        let passed_steps = |get: fn(&StepRow) -> Option<&Figures>| {
            m.steps.iter().filter_map(move |s| {
                get(s).map(|f| {
                    (
                        s.offered_per_s,
                        rate_steps::passes(s.offered_per_s, f.tps, f.p99_ms),
                    )
                })
            })
        };
        let max_rates = MaxRates {
            gatehouse: rate_steps::max_rate_under(passed_steps(|s| s.gatehouse.as_ref())),
            pgbench: rate_steps::max_rate_under(passed_steps(|s| s.pgbench.as_ref())),
        };
        let max_rate_ratio_vs_pgbench = rate_ratio(max_rates.gatehouse, max_rates.pgbench);

        let mut notes: Vec<String> = rls_note.into_iter().chain(m.rls_off_error).collect();
        let top = plan.rates.last().copied();
        if max_rates.pgbench.is_some() && max_rates.pgbench == top {
            notes.push(format!(
                "pgbench kept p99 under {P99_LIMIT_MS} ms at the highest rate offered ({}/s): \
                 its limit is higher; add rates (--rates) to find it",
                top.unwrap_or(0)
            ));
        }
        if max_rates.pgbench.is_none() {
            notes.push(format!(
                "pgbench kept p99 under {P99_LIMIT_MS} ms at no rate offered: lower --rates \
                 (or fewer neighbours on this machine) to compare"
            ));
        }
        let target = |name, target: String, value: Option<f64>, met: fn(f64) -> bool| SpeedTarget {
            name,
            target,
            value,
            met: value.map(met),
        };
        let targets = vec![
            target(
                "tps_ratio_vs_pgbench",
                format!(">= {TARGET_TPS_RATIO}"),
                tps_ratio_vs_pgbench,
                |v| v >= TARGET_TPS_RATIO,
            ),
            target(
                "rls_overhead_pct",
                format!("<= {TARGET_RLS_OVERHEAD_PCT}"),
                rls_overhead_pct,
                |v| v <= TARGET_RLS_OVERHEAD_PCT,
            ),
            target(
                "max_rate_ratio_vs_pgbench",
                format!(">= {TARGET_RATE_RATIO}"),
                max_rate_ratio_vs_pgbench,
                |v| v >= TARGET_RATE_RATIO,
            ),
        ];
        let mut thresholds = m.outcomes.thresholds(args);
        // A run that measured nothing must not pass for want of failures.
        thresholds.push(Threshold {
            name: "Gatehouse committed",
            limit: "> 0".into(),
            actual: m.outcomes.successes.to_string(),
            passed: m.outcomes.successes > 0,
        });
        let passed = thresholds.iter().all(|t| t.passed);
        CompareReport {
            profile: "compare",
            quick: args.quick,
            machine: Machine::here(),
            build: env!("GATEHOUSE_BUILD_PROFILE"),
            target: m.target,
            pgbench_version,
            clients: plan.clients,
            pgbench_threads: plan.clients.min(2),
            communities: args.communities,
            members_per_community: args.members,
            full_speed: FullSpeed {
                seconds_per_run: plan.full_speed_s,
                rounds: plan.rounds,
                gatehouse,
                pgbench,
                gatehouse_rls_off,
                runs: m.runs,
            },
            tps_ratio_vs_pgbench,
            rls_overhead_pct,
            rate_steps: RateSteps {
                seconds_per_step: plan.step_s,
                p99_limit_ms: P99_LIMIT_MS,
                steps: m.steps,
            },
            max_rate_p99_under_10ms: max_rates,
            max_rate_ratio_vs_pgbench,
            targets,
            notes,
            outcomes: m.outcomes,
            thresholds,
            passed,
        }
    }

    pub(super) fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ngatehouse bench db — compare profile{} against {}",
            if self.quick { " (quick)" } else { "" },
            self.target
        );
        let _ = writeln!(
            out,
            "  machine   {} cores, {:.1} GiB; {} build; {}",
            self.machine.cores, self.machine.memory_gib, self.build, self.pgbench_version
        );
        let _ = writeln!(
            out,
            "  load      {} clients each (pgbench -j {} -M extended), {} communities × {} members",
            self.clients, self.pgbench_threads, self.communities, self.members_per_community
        );
        let f = &self.full_speed;
        let _ = writeln!(
            out,
            "\n  full speed (closed loop), {} round{} of {} s per side",
            f.rounds,
            if f.rounds == 1 { "" } else { "s" },
            f.seconds_per_run
        );
        let _ = writeln!(
            out,
            "    {:<20} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "side", "tx/s", "p50 ms", "p99 ms", "max ms", "failed"
        );
        for (label, fig) in [
            (Side::Gatehouse.label(), &f.gatehouse),
            (Side::Pgbench.label(), &f.pgbench),
            (Side::GatehouseRlsOff.label(), &f.gatehouse_rls_off),
        ] {
            match fig {
                Some(x) => {
                    let _ = writeln!(
                        out,
                        "    {label:<20} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
                        x.tps, x.p50_ms, x.p99_ms, x.max_ms, x.failed
                    );
                }
                None => {
                    let _ = writeln!(out, "    {label:<20} {:>9}", "—");
                }
            }
        }
        if f.rounds > 1 {
            let _ = writeln!(
                out,
                "    {:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "round, tx/s", "Gatehouse", "pgbench", "RLS off", "ratio", "RLS +%"
            );
            for round in 1..=f.rounds {
                let tps = |side| {
                    f.runs
                        .iter()
                        .find(|r| r.round == round && r.side == side)
                        .map(|r| r.figures.tps)
                };
                let (g, p, off) = (
                    tps(Side::Gatehouse),
                    tps(Side::Pgbench),
                    tps(Side::GatehouseRlsOff),
                );
                let cell = |v: Option<f64>, digits: usize| {
                    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
                };
                let _ = writeln!(
                    out,
                    "    {round:<20} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    cell(g, 1),
                    cell(p, 1),
                    cell(off, 1),
                    cell(ratio(g, p), 3),
                    cell(ratio(off, g).map(|r| (r - 1.0) * 100.0), 1),
                );
            }
        }
        let s = &self.rate_steps;
        let _ = writeln!(
            out,
            "\n  rate steps (open loop, {} s each; latency from the scheduled start)",
            s.seconds_per_step
        );
        let _ = writeln!(
            out,
            "    {:>10} │ {:>9} {:>9} {:>9} │ {:>9} {:>9} {:>9}",
            "offered/s", "Gatehouse", "p99 ms", "", "pgbench", "p99 ms", ""
        );
        let cell = |f: &Option<Figures>, offered: u32| match f {
            Some(f) => format!(
                "{:>9.1} {:>9.2} {:>9}",
                f.tps,
                f.p99_ms,
                if rate_steps::passes(offered, f.tps, f.p99_ms) {
                    "ok"
                } else {
                    "over"
                }
            ),
            None => format!("{:>9} {:>9} {:>9}", "—", "", "stopped"),
        };
        for step in &s.steps {
            let _ = writeln!(
                out,
                "    {:>10} │ {} │ {}",
                step.offered_per_s,
                cell(&step.gatehouse, step.offered_per_s),
                cell(&step.pgbench, step.offered_per_s)
            );
        }
        let rate = |r: Option<u32>| r.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"));
        let _ = writeln!(
            out,
            "    max_rate_p99_under_10ms: Gatehouse {}, pgbench {}",
            rate(self.max_rate_p99_under_10ms.gatehouse),
            rate(self.max_rate_p99_under_10ms.pgbench)
        );
        let _ = writeln!(
            out,
            "\n  figures (ratios: median of the rounds'; targets are reported, not enforced)"
        );
        for t in &self.targets {
            let (value, verdict) = match (t.value, t.met) {
                (Some(v), Some(met)) => (format!("{v:.3}"), if met { "met" } else { "MISSED" }),
                _ => ("—".to_owned(), "not measured"),
            };
            let _ = writeln!(
                out,
                "    {:<27} {:>9}   target {:<7} {verdict}",
                t.name, value, t.target
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "    note: {note}");
        }
        let _ = writeln!(
            out,
            "\n  Gatehouse outcomes: {} transactions, {:.3} % committed, {} connection errors, \
             {} query errors, {} cross-tenant rows",
            self.outcomes.transactions,
            self.outcomes.success_rate * 100.0,
            self.outcomes.connection_errors,
            self.outcomes.query_errors,
            self.outcomes.cross_tenant_rows
        );
        let _ = writeln!(out, "  thresholds");
        render_thresholds(&mut out, &self.thresholds);
        let _ = writeln!(
            out,
            "  result    {}",
            if self.passed { "PASSED" } else { "FAILED" }
        );
        out
    }

    /// p99 against offered rate beside the 10 ms line; throughput against
    /// offered rate beside each side's full-speed throughput.
    pub(super) fn charts(&self) -> Vec<plot::Chart> {
        let steps = &self.rate_steps.steps;
        let points = |get: fn(&StepRow) -> Option<&Figures>, y: fn(&Figures) -> f64| {
            steps
                .iter()
                .filter_map(|s| get(s).map(|f| (f64::from(s.offered_per_s), y(f))))
                .collect::<Vec<_>>()
        };
        let mut latency = plot::Chart::new(
            format!(
                "bench db: p99 against offered rate ({} clients, open loop)",
                self.clients
            ),
            "offered transactions/s",
            "p99 ms (from the scheduled start)",
        )
        .series("Gatehouse", points(|s| s.gatehouse.as_ref(), |f| f.p99_ms))
        .series("pgbench", points(|s| s.pgbench.as_ref(), |f| f.p99_ms))
        .limit(format!("{P99_LIMIT_MS} ms"), P99_LIMIT_MS)
        .log_y();
        if steps.len() > 1 {
            latency = latency.log_x();
        }
        let mut throughput = plot::Chart::new(
            "throughput against offered rate, and at full speed (dashed)",
            "offered transactions/s",
            "transactions/s",
        )
        .series("Gatehouse", points(|s| s.gatehouse.as_ref(), |f| f.tps))
        .series("pgbench", points(|s| s.pgbench.as_ref(), |f| f.tps));
        let f = &self.full_speed;
        for (label, fig) in [
            ("Gatehouse at full speed", &f.gatehouse),
            ("pgbench at full speed", &f.pgbench),
            ("Gatehouse, RLS off, at full speed", &f.gatehouse_rls_off),
        ] {
            if let Some(fig) = fig {
                throughput = throughput.limit(label, fig.tps);
            }
        }
        vec![latency, throughput]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_both_sides() {
        assert_eq!(ratio(Some(900.0), Some(1000.0)), Some(0.9));
        assert_eq!(ratio(Some(900.0), None), None);
        assert_eq!(ratio(Some(900.0), Some(0.0)), None);
        assert_eq!(rate_ratio(Some(750), Some(1000)), Some(0.75));
        // Gatehouse under 10 ms at no rate where pgbench was: 0, not absent.
        assert_eq!(rate_ratio(None, Some(500)), Some(0.0));
        assert_eq!(rate_ratio(Some(500), None), None);
    }

    fn row(round: u32, side: Side, tps: f64) -> RunRow {
        let h = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        RunRow {
            round,
            side,
            figures: Figures::with_latency(h, 0, 0, 1.0, tps),
        }
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_so_one_disturbed_run_does_not_move_it() {
        use Side::{Gatehouse as G, Pgbench as P};
        let runs = [
            row(1, G, 900.0),
            row(1, P, 1000.0),
            // A neighbour's build lands on pgbench's turn.
            row(2, P, 300.0),
            row(2, G, 880.0),
            row(3, G, 700.0),
            row(3, P, 800.0),
        ];
        assert_eq!(median_round_ratio(&runs, G, P), Some(0.9));
        assert_eq!(
            median_round_ratio(&runs[..4], G, P),
            Some((0.9 + 880.0 / 300.0) / 2.0)
        );
        // A side that never ran: no figure.
        assert_eq!(median_round_ratio(&runs, Side::GatehouseRlsOff, G), None);
    }

    #[test]
    fn runs_combine_into_mean_throughput_and_pooled_percentiles() {
        let run = |tps: f64, micros: u64| {
            let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
            for _ in 0..100 {
                h.record(micros).unwrap();
            }
            Figures::with_latency(h, 100, 0, 1.0, tps)
        };
        let (a, b) = (run(1000.0, 1000), run(500.0, 20_000));
        let both = Figures::combine(&[&a, &b]).unwrap();
        assert_eq!(both.tps, 750.0);
        assert_eq!(both.transactions, 200);
        assert!(both.p50_ms < 1.1 && both.p99_ms > 19.0, "{both:?}");
        assert!(Figures::combine(&[]).is_none());
    }
}
