//! The report: one row per guild count, the headline figures at the largest
//! count against their targets, as JSON, a terminal table and charts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::machine::Machine;
use crate::bench::plot::Chart;

/// `throughput_ratio_vs_baseline` at or above this meets the target.
pub const RATIO_TARGET: f64 = 0.8;
/// `rss_mb_per_1k_guilds` at or below this meets the target.
pub const RSS_PER_1K_TARGET_MB: f64 = 2.0;

/// A round's phase during which the hypervisor took at least this share of
/// the machine's CPU is marked in the table.
pub const STEAL_MARK_PCT: f64 = 5.0;

/// The figures of one guild count (one gateway process). Storm figures are
/// the medians of its rounds (the ratio the median of the rounds' ratios,
/// each between rates measured a moment apart), counts their sums.
#[derive(Debug, Serialize)]
pub struct SizeRow {
    pub guilds: usize,
    pub shards: u32,
    /// From starting the gateway until JetStream held every guild's
    /// GUILD_CREATE (as `guild.join`).
    pub guilds_in_jetstream_s: f64,
    /// Gateway RSS once READY and every GUILD_CREATE are handled, MB
    /// (10^6 bytes), read from /proc/<pid>/status VmRSS.
    pub rss_mb: f64,
    /// `rss_mb` ÷ (guilds ÷ 1,000).
    pub rss_mb_per_1k_guilds: f64,
    /// Highest RSS until then (VmHWM): the GUILD_CREATE burst, MB.
    pub peak_rss_guilds_mb: f64,
    /// Member events the simulator sent in each storm.
    pub storm_events: u64,
    /// Messages JetStream stored from a storm's first event to its last:
    /// the storm, plus member chunks the gateway published in between.
    /// Both publishers move exactly these.
    pub messages: u64,
    /// `messages` ÷ JetStream's time from the first to the last of them,
    /// published by the gateway.
    pub events_per_s: f64,
    /// The same, published by the bare async-nats publisher.
    pub baseline_events_per_s: f64,
    /// `events_per_s` ÷ `baseline_events_per_s`, round by round.
    pub throughput_ratio_vs_baseline: f64,
    /// The benchmark's clock from releasing a queued storm until
    /// JetStream held all of it.
    pub storm_wall_s: f64,
    /// Identifies and resumes at the simulator while the storms drained: a
    /// shard that reconnects is sent its session's backlog again, so
    /// anything but 0 means work done twice and a rate that measures it.
    pub storm_reconnects: u64,
    /// CPU the gateway process used while draining a storm, per message.
    pub gateway_cpu_us_per_event: f64,
    /// CPU this process (the simulator writing out the storm it encoded
    /// beforehand) used meanwhile, per message: on a shared machine it
    /// competes with the gateway.
    pub simulator_cpu_us_per_event: f64,
    /// CPU the bare publisher used, per message.
    pub baseline_cpu_us_per_event: f64,
    /// The bare publisher's clock from its first send to its last ack.
    pub baseline_wall_s: f64,
    pub baseline_duplicates: u64,
    /// The highest share of the machine's CPU the hypervisor took (steal)
    /// in any round's timed phase, %.
    pub max_steal_pct: f64,
    pub rounds: Vec<Round>,
    /// Highest RSS of the gateway over its whole run, MB.
    pub peak_rss_mb: f64,
    /// SIGTERM to exit.
    pub shutdown_s: f64,
    pub exit_code: Option<i32>,
}

impl SizeRow {
    pub fn new(
        guilds: usize,
        shards: u32,
        loaded: Loaded,
        rounds: Vec<Round>,
        peak_rss_mb: f64,
        stopped: super::process::Stopped,
    ) -> SizeRow {
        let median_of = |f: fn(&Round) -> f64| median(rounds.iter().map(f));
        SizeRow {
            guilds,
            shards,
            guilds_in_jetstream_s: loaded.guilds_in_jetstream_s,
            rss_mb: loaded.rss_mb,
            rss_mb_per_1k_guilds: per_1k_guilds(loaded.rss_mb, guilds),
            peak_rss_guilds_mb: loaded.peak_rss_guilds_mb,
            storm_events: rounds.first().map_or(0, |r| r.gateway.events),
            messages: median_of(|r| r.gateway.messages as f64).round() as u64,
            events_per_s: median_of(|r| r.gateway.events_per_s),
            baseline_events_per_s: median_of(|r| r.bare.events_per_s),
            throughput_ratio_vs_baseline: median_of(|r| r.throughput_ratio_vs_baseline),
            storm_wall_s: median_of(|r| r.gateway.wall_s),
            storm_reconnects: rounds.iter().map(|r| r.gateway.reconnects).sum(),
            gateway_cpu_us_per_event: median_of(|r| r.gateway.cpu_us_per_event),
            simulator_cpu_us_per_event: median_of(|r| r.gateway.simulator_cpu_us_per_event),
            baseline_cpu_us_per_event: median_of(|r| r.bare.cpu_us_per_event),
            baseline_wall_s: median_of(|r| r.bare.wall_s),
            baseline_duplicates: rounds.iter().map(|r| r.bare.duplicates).sum(),
            max_steal_pct: rounds.iter().map(Round::steal_pct).fold(0.0, f64::max),
            rounds,
            peak_rss_mb,
            shutdown_s: stopped.shutdown_s,
            exit_code: stopped.exit_code,
        }
    }
}

/// The gateway with every guild loaded.
#[derive(Debug)]
pub struct Loaded {
    pub guilds_in_jetstream_s: f64,
    pub rss_mb: f64,
    pub peak_rss_guilds_mb: f64,
}

/// One storm drained by the gateway, then the same messages pushed by the
/// bare publisher.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub gateway: GatewayStorm,
    pub bare: BareStorm,
    pub throughput_ratio_vs_baseline: f64,
}

impl Round {
    pub fn new(gateway: GatewayStorm, bare: BareStorm) -> Round {
        Round {
            throughput_ratio_vs_baseline: ratio(gateway.events_per_s, bare.events_per_s),
            gateway,
            bare,
        }
    }

    fn steal_pct(&self) -> f64 {
        self.gateway.steal_pct.max(self.bare.steal_pct)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayStorm {
    /// Member events the simulator sent.
    pub events: u64,
    /// Messages stored from the storm's first event to its last.
    pub messages: u64,
    pub events_per_s: f64,
    pub wall_s: f64,
    pub reconnects: u64,
    pub cpu_us_per_event: f64,
    pub simulator_cpu_us_per_event: f64,
    /// The share of the machine's CPU the hypervisor took meanwhile, %.
    pub steal_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BareStorm {
    pub events_per_s: f64,
    pub cpu_us_per_event: f64,
    pub wall_s: f64,
    pub duplicates: u64,
    /// The share of the machine's CPU the hypervisor took meanwhile, %.
    pub steal_pct: f64,
}

/// The middle value (the mean of the two middle ones for an even count);
/// zero for none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    }
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub command: String,
    pub machine: Machine,
    pub quick: bool,
    /// EVENTS stream storage, for both publishers.
    pub storage: String,
    pub members_per_guild: usize,
    pub guilds_per_shard: usize,
    /// Publishes awaiting their ack at once, for both publishers.
    pub publish_window: usize,
    /// Async runtime threads, for both publishers.
    pub runtime_threads: u16,
}

#[derive(Debug, Serialize)]
pub struct Targets {
    pub throughput_ratio_vs_baseline_min: f64,
    pub throughput_met: bool,
    pub rss_mb_per_1k_guilds_max: f64,
    pub rss_met: bool,
}

#[derive(Debug, Serialize)]
pub struct GatewayReport {
    #[serde(flatten)]
    pub setup: Setup,
    /// RSS of a gateway holding one shard without guilds, MB.
    pub idle_rss_mb: f64,
    pub sizes: Vec<SizeRow>,
    /// The largest guild count: the headline figures below are its row's.
    pub guilds: usize,
    pub events_per_s: f64,
    pub baseline_events_per_s: f64,
    pub throughput_ratio_vs_baseline: f64,
    pub rss_mb_per_1k_guilds: f64,
    /// (RSS − idle RSS) ÷ (guilds ÷ 1,000): what each 1,000 guilds add.
    pub rss_mb_per_1k_guilds_above_idle: f64,
    pub targets: Targets,
}

impl GatewayReport {
    /// `None` without a row to take the headline from.
    pub fn new(setup: Setup, idle_rss_mb: f64, sizes: Vec<SizeRow>) -> Option<GatewayReport> {
        let top = sizes.iter().max_by_key(|r| r.guilds)?;
        let report = GatewayReport {
            guilds: top.guilds,
            events_per_s: top.events_per_s,
            baseline_events_per_s: top.baseline_events_per_s,
            throughput_ratio_vs_baseline: top.throughput_ratio_vs_baseline,
            rss_mb_per_1k_guilds: top.rss_mb_per_1k_guilds,
            rss_mb_per_1k_guilds_above_idle: per_1k_guilds(top.rss_mb - idle_rss_mb, top.guilds),
            targets: Targets {
                throughput_ratio_vs_baseline_min: RATIO_TARGET,
                throughput_met: top.throughput_ratio_vs_baseline >= RATIO_TARGET,
                rss_mb_per_1k_guilds_max: RSS_PER_1K_TARGET_MB,
                rss_met: top.rss_mb_per_1k_guilds <= RSS_PER_1K_TARGET_MB,
            },
            setup,
            idle_rss_mb,
            sizes,
        };
        Some(report)
    }
}

/// `count` over `span_s`; zero for an empty or instant span rather than
/// infinity, which JSON cannot carry.
pub fn per_second(count: u64, span_s: f64) -> f64 {
    if span_s > 0.0 {
        count as f64 / span_s
    } else {
        0.0
    }
}

pub fn per_1k_guilds(mb: f64, guilds: usize) -> f64 {
    if guilds == 0 {
        0.0
    } else {
        mb / (guilds as f64 / 1000.0)
    }
}

/// CPU seconds per item, in µs.
pub fn micros_per(cpu_s: f64, items: u64) -> f64 {
    if items == 0 {
        0.0
    } else {
        cpu_s * 1e6 / items as f64
    }
}

pub fn ratio(value: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        value / limit
    } else {
        0.0
    }
}

/// The terminal table.
pub fn render(r: &GatewayReport) -> String {
    let s = &r.setup;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ngateway: one `gatehouse gateway` process against the simulator ({} cores, {:.1} GiB); \
         {} members per guild, {} guilds per shard; EVENTS on {} storage; publish window {}; \
         runtime threads {}",
        s.machine.cores,
        s.machine.memory_gib,
        s.members_per_guild,
        s.guilds_per_shard,
        s.storage,
        s.publish_window,
        s.runtime_threads
    );
    let _ = writeln!(
        out,
        "  {:>9} {:>6} {:>10} {:>7} {:>8} {:>7} {:>9} {:>10} {:>10} {:>6}  {:>21}",
        "guilds",
        "shards",
        "joined in",
        "RSS MB",
        "MB/1k g",
        "peak MB",
        "messages",
        "gateway/s",
        "bare pub/s",
        "ratio",
        "CPU µs/msg gw sim bare"
    );
    for row in &r.sizes {
        let _ = writeln!(
            out,
            "  {:>9} {:>6} {:>8.1} s {:>7.1} {:>8.2} {:>7.1} {:>9} {:>10} {:>10} {:>6.2}  {:>9.1} {:>5.1} {:>5.1}",
            thousands(row.guilds as u64),
            row.shards,
            row.guilds_in_jetstream_s,
            row.rss_mb,
            row.rss_mb_per_1k_guilds,
            row.peak_rss_mb,
            thousands(row.messages),
            thousands(row.events_per_s.round() as u64),
            thousands(row.baseline_events_per_s.round() as u64),
            row.throughput_ratio_vs_baseline,
            row.gateway_cpu_us_per_event,
            row.simulator_cpu_us_per_event,
            row.baseline_cpu_us_per_event,
        );
    }
    let _ = writeln!(
        out,
        "  rounds (the rows above are their medians):\n  {:>9} {:>6} {:>10} {:>10} {:>6}  {:>17}",
        "guilds", "round", "gateway/s", "bare pub/s", "ratio", "steal % gw bare"
    );
    for row in &r.sizes {
        for (i, round) in row.rounds.iter().enumerate() {
            let mark = if round.steal_pct() >= STEAL_MARK_PCT {
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:>9} {:>6} {:>10} {:>10} {:>6.2}  {:>12.0} {:>4.0}{mark}",
                thousands(row.guilds as u64),
                i + 1,
                thousands(round.gateway.events_per_s.round() as u64),
                thousands(round.bare.events_per_s.round() as u64),
                round.throughput_ratio_vs_baseline,
                round.gateway.steal_pct,
                round.bare.steal_pct,
            );
        }
    }
    if r.sizes
        .iter()
        .any(|row| row.max_steal_pct >= STEAL_MARK_PCT)
    {
        let _ = writeln!(
            out,
            "  * the hypervisor gave {STEAL_MARK_PCT} % or more of this machine's CPU to other guests \
             during that round: its rates are the host's as much as the gateway's"
        );
    }
    for row in r.sizes.iter().filter(|row| row.storm_reconnects > 0) {
        let _ = writeln!(
            out,
            "  at {} guilds the gateway reconnected {} times during the storm: the simulator replayed \
             those sessions' backlogs, so its figures include work done twice",
            thousands(row.guilds as u64),
            row.storm_reconnects
        );
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let _ = writeln!(
        out,
        "  idle gateway (one shard, no guilds): {:.1} MB; each 1,000 guilds add {:.2} MB at {}",
        r.idle_rss_mb,
        r.rss_mb_per_1k_guilds_above_idle,
        thousands(r.guilds as u64)
    );
    let _ = writeln!(
        out,
        "  at {} guilds: throughput_ratio_vs_baseline {:.2} (target ≥ {RATIO_TARGET}: {}), \
         rss_mb_per_1k_guilds {:.2} (target ≤ {RSS_PER_1K_TARGET_MB}: {})",
        thousands(r.guilds as u64),
        r.throughput_ratio_vs_baseline,
        verdict(r.targets.throughput_met),
        r.rss_mb_per_1k_guilds,
        verdict(r.targets.rss_met),
    );
    if s.quick {
        let _ = writeln!(
            out,
            "  (--quick: a smoke run; the targets are stated for the full run)"
        );
    }
    out
}

/// `--plot`: memory per 1,000 guilds against its target, and throughput
/// beside the bare publisher with the ratio against its target.
pub fn charts(r: &GatewayReport) -> Vec<Chart> {
    let points = |f: fn(&SizeRow) -> f64| -> Vec<(f64, f64)> {
        r.sizes
            .iter()
            .map(|row| (row.guilds as f64, f(row)))
            .collect()
    };
    vec![
        Chart::new(
            "gateway RSS per 1,000 guilds after READY and GUILD_CREATE",
            "guilds",
            "MB per 1,000 guilds",
        )
        .series("gateway", points(|row| row.rss_mb_per_1k_guilds))
        .limit(
            format!("target ≤ {RSS_PER_1K_TARGET_MB} MB"),
            RSS_PER_1K_TARGET_MB,
        )
        .log_x()
        .log_y(),
        Chart::new("events/s stored by JetStream", "guilds", "events/s")
            .series("gateway", points(|row| row.events_per_s))
            .series(
                "bare async-nats publisher",
                points(|row| row.baseline_events_per_s),
            )
            .log_x(),
        Chart::new("gateway ÷ bare publisher", "guilds", "throughput ratio")
            .series("gateway", points(|row| row.throughput_ratio_vs_baseline))
            .limit(format!("target ≥ {RATIO_TARGET}"), RATIO_TARGET)
            .log_x(),
    ]
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::process::Stopped;
    use super::*;

    fn round(events_per_s: f64, baseline: f64, steal_pct: f64) -> Round {
        Round::new(
            GatewayStorm {
                events: 10,
                messages: 10,
                events_per_s,
                wall_s: 1.0,
                reconnects: 0,
                cpu_us_per_event: 20.0,
                simulator_cpu_us_per_event: 10.0,
                steal_pct,
            },
            BareStorm {
                events_per_s: baseline,
                cpu_us_per_event: 5.0,
                wall_s: 1.0,
                duplicates: 0,
                steal_pct: 0.0,
            },
        )
    }

    fn rounds_row(guilds: usize, rss_mb: f64, rounds: Vec<Round>) -> SizeRow {
        SizeRow::new(
            guilds,
            1,
            Loaded {
                guilds_in_jetstream_s: 1.0,
                rss_mb,
                peak_rss_guilds_mb: rss_mb,
            },
            rounds,
            rss_mb,
            Stopped {
                shutdown_s: 0.1,
                exit_code: Some(0),
            },
        )
    }

    fn row(guilds: usize, rss_mb: f64, events_per_s: f64, baseline: f64) -> SizeRow {
        rounds_row(guilds, rss_mb, vec![round(events_per_s, baseline, 0.0)])
    }

    fn setup() -> Setup {
        Setup {
            command: "gatehouse bench gateway".into(),
            machine: Machine {
                cores: 2,
                memory_gib: 4.0,
            },
            quick: false,
            storage: "file".into(),
            members_per_guild: 10,
            guilds_per_shard: 2500,
            publish_window: 256,
            runtime_threads: 1,
        }
    }

    #[test]
    fn the_headline_is_the_largest_guild_count_whatever_the_order() {
        let sizes = vec![
            row(10_000, 30.0, 20_000.0, 25_000.0),
            row(100_000, 150.0, 18_000.0, 30_000.0),
            row(1_000, 12.0, 21_000.0, 22_000.0),
        ];
        let r = GatewayReport::new(setup(), 10.0, sizes).unwrap();
        assert_eq!(r.guilds, 100_000);
        assert!((r.rss_mb_per_1k_guilds - 1.5).abs() < 1e-9);
        assert!((r.rss_mb_per_1k_guilds_above_idle - 1.4).abs() < 1e-9);
        assert!((r.throughput_ratio_vs_baseline - 0.6).abs() < 1e-9);
        assert!(r.targets.rss_met);
        assert!(!r.targets.throughput_met);
        let table = render(&r);
        assert!(table.contains("100,000"), "{table}");
        assert!(table.contains("MISSED"), "{table}");
        assert!(!table.contains("reconnected"), "{table}");
        assert!(GatewayReport::new(setup(), 10.0, Vec::new()).is_none());
    }

    #[test]
    fn a_storm_with_reconnects_is_called_out() {
        let mut replayed = row(100_000, 150.0, 18_000.0, 30_000.0);
        replayed.storm_reconnects = 40;
        let r = GatewayReport::new(setup(), 10.0, vec![replayed]).unwrap();
        let table = render(&r);
        assert!(
            table.contains("at 100,000 guilds the gateway reconnected 40 times during the storm"),
            "{table}"
        );
    }

    #[test]
    fn a_size_reports_the_medians_of_its_rounds() {
        let mut slowed = round(50_000.0, 100_000.0, 0.0);
        slowed.gateway.reconnects = 2;
        let row = rounds_row(
            100_000,
            80.0,
            vec![
                slowed,
                round(80_000.0, 90_000.0, 0.0),
                round(70_000.0, 80_000.0, 0.0),
            ],
        );
        // The ratio is the middle of 0.5, 0.889 and 0.875, not 70,000 ÷ 90,000.
        assert!((row.throughput_ratio_vs_baseline - 0.875).abs() < 1e-9);
        assert_eq!(row.events_per_s, 70_000.0);
        assert_eq!(row.baseline_events_per_s, 90_000.0);
        // Work done twice in any round is not hidden by a median.
        assert_eq!(row.storm_reconnects, 2);
        assert_eq!(row.rounds.len(), 3);
    }

    #[test]
    fn a_round_the_hypervisor_slowed_is_marked() {
        let calm = GatewayReport::new(setup(), 10.0, vec![row(1_000, 12.0, 20.0, 25.0)]).unwrap();
        let table = render(&calm);
        assert!(!table.contains("other guests"), "{table}");

        let mut stolen = round(20.0, 25.0, 1.0);
        stolen.bare.steal_pct = 31.0;
        let r = GatewayReport::new(
            setup(),
            10.0,
            vec![rounds_row(
                1_000,
                12.0,
                vec![round(20.0, 25.0, 0.0), stolen],
            )],
        )
        .unwrap();
        assert_eq!(r.sizes[0].max_steal_pct, 31.0);
        let table = render(&r);
        assert!(table.contains("  31 *\n"), "{table}");
        assert!(table.contains("other guests"), "{table}");
    }

    #[test]
    fn medians_of_odd_even_and_no_values() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn empty_spans_give_zero_rates_not_infinity() {
        assert_eq!(per_second(5, 0.0), 0.0);
        assert_eq!(per_second(10, 2.0), 5.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(per_1k_guilds(5.0, 0), 0.0);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
