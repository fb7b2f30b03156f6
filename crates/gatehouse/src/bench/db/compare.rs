//! `--profile compare`: Gatehouse's tenant transaction beside pgbench
//! running the same transaction, same clients, same PgBouncer, same run.
//!
//! 1. Full speed (closed loop), in rounds: Gatehouse, pgbench and Gatehouse
//!    on the copy without row-level security, each for the same time, the
//!    order rotating every round so a neighbour's burst or the database's
//!    own drift (checkpoints, a growing audit log) does not always land on
//!    the same side. `tps_ratio_vs_pgbench`, `rls_overhead_pct`.
//! 2. Open-loop rate steps, ascending, Gatehouse and pgbench in turns:
//!    `max_rate_p99_under_10ms` for each, `max_rate_ratio_vs_pgbench`.
//!
//! Speed targets are printed beside the figures, not enforced: these are
//! shared 2-core machines. The correctness thresholds are enforced over
//! every Gatehouse transaction of the run.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use indicatif::ProgressBar;
use settings::Secret;
use store::Store;

use super::{
    super::plot,
    closed_loop,
    conninfo::{self, ConnInfo},
    pgbench::{self, Load, Pgbench},
    progress_bar, rate_steps,
    report::{CompareReport, Figures, Measurements, RunRow, Side, StepRow},
    rls_copy::RlsOffCopy,
    workload::{self, Tenants},
    BenchDbArgs, Outcomes,
};
use crate::db_args::{self, explain, DbArgs};

/// What this run measures, from the flags and `--quick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) clients: u32,
    /// Whole seconds: pgbench's `-T` takes no fractions, and both sides
    /// must run for the same time.
    pub(super) full_speed_s: u64,
    pub(super) rounds: u32,
    pub(super) rates: Vec<u32>,
    pub(super) step_s: u64,
}

impl Plan {
    fn from_args(args: &BenchDbArgs) -> Plan {
        let whole = |d: Option<Duration>, default: u64| {
            d.map_or(default, |d| d.as_secs_f64().ceil().max(1.0) as u64)
        };
        let (full_speed_s, rounds, rates, step_s) = if args.quick {
            (3, 1, vec![250, 500], 2)
        } else {
            (6, 5, vec![100, 250, 500, 750, 1000, 1250, 1500, 2000], 10)
        };
        Plan {
            clients: args.clients,
            full_speed_s: whole(args.full_speed_for, full_speed_s),
            rounds: args.rounds.unwrap_or(rounds),
            rates: rate_steps::ordered(if args.rates.is_empty() {
                rates
            } else {
                args.rates.clone()
            }),
            step_s: whole(args.step_for, step_s),
        }
    }
}

pub async fn run(args: BenchDbArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_args(&args);
    if args.db.pool_size.is_some() {
        eprintln!("note: --db-pool-size is ignored by the compare profile: the pool is --clients");
    }
    let config = args
        .db
        .store_config(plan.clients as usize)?
        .with_pool_size(plan.clients as usize)
        .context("--clients as the pool size")?;
    let url = args
        .db
        .database_url
        .clone()
        .context("--database-url is required")?;
    let conn = ConnInfo::parse(url.expose()).context("--database-url, for pgbench")?;
    let original = conn
        .database()
        .context("--database-url names no database")?
        .to_owned();
    let (mut pgbench, pgbench_version) = Pgbench::prepare(
        args.pgbench.clone(),
        conn,
        plan.clients,
        pgbench::TENANT_TX,
        vec![
            ("communities", args.communities.to_string()),
            ("members", args.members.to_string()),
        ],
    )
    .await?;
    eprintln!(
        "gatehouse bench db: compare profile{}, {} clients, {} communities × {} members, via {}; \
         beside {pgbench_version}",
        if args.quick { " (quick)" } else { "" },
        plan.clients,
        args.communities,
        args.members,
        config.redacted_url(),
    );

    // The copy is made before this run connects to the original: CREATE
    // DATABASE … TEMPLATE needs the original free of sessions, and on a
    // fresh database PgBouncer holds none yet.
    let copy = match &args.admin_url {
        Some(admin) if !admin.is_blank() => {
            let made = async {
                let admin = ConnInfo::parse(admin.expose()).context("--admin-url")?;
                RlsOffCopy::create(psql_beside(&args.pgbench), admin, &original).await
            }
            .await;
            made.map_err(|e| format!("rls_overhead_pct not measured: the copy without row-level security failed: {e:#}"))
        }
        _ => Err(
            "rls_overhead_pct not measured: it needs --admin-url (or GATEHOUSE_ADMIN_URL), a role \
             that may create databases, for the throwaway copy without row-level security"
                .to_owned(),
        ),
    };
    if let Ok(c) = &copy {
        eprintln!(
            "  row-level security off on {} tables of the throwaway copy {}",
            c.tables, c.name
        );
    }

    let measured = tokio::select! {
        m = measure(&args, &plan, config, &url, copy.as_ref().ok(), &mut pgbench) => m,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // `measure` has closed its connections to the copy by now.
    let rls_note = match copy {
        Ok(c) => {
            c.drop_database().await;
            None
        }
        Err(note) => Some(note),
    };
    let report = CompareReport::new(&args, &plan, pgbench_version, rls_note, measured?);
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

/// psql from the same installation as the pgbench given, else from PATH.
fn psql_beside(pgbench: &std::path::Path) -> PathBuf {
    pgbench
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// A Gatehouse client pool on one database and its seeded communities.
struct Target {
    store: Store,
    tenants: Arc<Tenants>,
}

impl Target {
    async fn open(db: &DbArgs, clients: usize, args: &BenchDbArgs) -> anyhow::Result<Target> {
        let config = db
            .store_config(clients)?
            .with_pool_size(clients)
            .context("--clients as the pool size")?;
        Target::open_with(config, args).await
    }

    async fn open_with(config: store::StoreConfig, args: &BenchDbArgs) -> anyhow::Result<Target> {
        let store = db_args::connect(config).await?;
        let tenants = workload::seed(&store, args.communities, args.members)
            .await
            .map_err(|e| explain(e, "seeding bench communities"))?;
        workload::warm_up(&store, &tenants)
            .await
            .map_err(|e| explain(e, "opening the bench's connections"))?;
        Ok(Target {
            store,
            tenants: Arc::new(tenants),
        })
    }
}

async fn measure(
    args: &BenchDbArgs,
    plan: &Plan,
    config: store::StoreConfig,
    url: &Secret,
    copy: Option<&RlsOffCopy>,
    pgbench: &mut Pgbench,
) -> anyhow::Result<Measurements> {
    let target = config.redacted_url();
    let main = Target::open_with(config, args).await?;
    let mut rls_off_error = None;
    let rls_off = match copy {
        None => None,
        Some(copy) => {
            let opened = async {
                let db = DbArgs {
                    database_url: Some(Secret::from(conninfo::replace_dbname(
                        url.expose(),
                        &copy.name,
                    )?)),
                    ..args.db.clone()
                };
                Target::open(&db, plan.clients as usize, args).await
            }
            .await;
            opened
                .map_err(|e| {
                    rls_off_error = Some(format!(
                        "rls_overhead_pct not measured: the copy {} could not be used: {e:#}",
                        copy.name
                    ));
                })
                .ok()
        }
    };
    let mut m = Measurements {
        target,
        runs: Vec::new(),
        steps: Vec::new(),
        outcomes: Outcomes::default(),
        rls_off_error,
    };
    full_speed(plan, &main, rls_off.as_ref(), pgbench, &mut m).await?;
    rate_steps(plan, &main, pgbench, &mut m).await?;
    Ok(m)
}

/// Phase 1: the rounds at full speed.
async fn full_speed(
    plan: &Plan,
    main: &Target,
    rls_off: Option<&Target>,
    pgbench: &mut Pgbench,
    m: &mut Measurements,
) -> anyhow::Result<()> {
    let mut sides = vec![Side::Gatehouse, Side::Pgbench];
    if rls_off.is_some() {
        sides.push(Side::GatehouseRlsOff);
    }
    let run_ms = plan.full_speed_s * 1000;
    let length = Duration::from_secs(plan.full_speed_s);
    let bar = progress_bar(
        u64::from(plan.rounds) * sides.len() as u64 * run_ms,
        "  {prefix:<34} [{bar:30.cyan/blue}] {percent:>3}% {msg}",
    );
    let mut index = 0u64;
    for round in 0..plan.rounds {
        for k in 0..sides.len() {
            let side = sides[(round as usize + k) % sides.len()];
            let base = index * run_ms;
            index += 1;
            bar.set_prefix(format!(
                "full speed {}/{}: {}",
                round + 1,
                plan.rounds,
                side.label()
            ));
            let figures = match side {
                Side::Pgbench => Figures::pgbench(
                    pgbench
                        .run(Load::FullSpeed, plan.full_speed_s, &bar, base)
                        .await
                        .context("pgbench at full speed")?,
                    plan.full_speed_s,
                ),
                Side::Gatehouse | Side::GatehouseRlsOff => {
                    let target = if side == Side::Gatehouse {
                        Some(main)
                    } else {
                        rls_off
                    };
                    let Some(t) = target else { continue };
                    let run = closed_loop::full_speed(
                        &t.store,
                        &t.tenants,
                        plan.clients,
                        length,
                        &bar,
                        base,
                    )
                    .await;
                    m.outcomes = m.outcomes.plus(&run.recorder);
                    Figures::gatehouse(&run)
                }
            };
            log_if_hidden(
                &bar,
                &format!(
                    "full speed, round {}/{}, {}: {:.0} tx/s, p99 {:.2} ms",
                    round + 1,
                    plan.rounds,
                    side.label(),
                    figures.tps,
                    figures.p99_ms
                ),
            );
            m.runs.push(RunRow {
                round: round + 1,
                side,
                figures,
            });
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Phase 2: the open-loop steps, each side until it fails twice in a row.
async fn rate_steps(
    plan: &Plan,
    main: &Target,
    pgbench: &mut Pgbench,
    m: &mut Measurements,
) -> anyhow::Result<()> {
    let step_ms = plan.step_s * 1000;
    let length = Duration::from_secs(plan.step_s);
    let bar = progress_bar(
        plan.rates.len() as u64 * 2 * step_ms,
        "  {prefix:<34} [{bar:30.cyan/blue}] {percent:>3}% {msg}",
    );
    let mut passed: [Vec<bool>; 2] = [Vec::new(), Vec::new()];
    for (i, &rate) in plan.rates.iter().enumerate() {
        let mut row = StepRow {
            offered_per_s: rate,
            gatehouse: None,
            pgbench: None,
        };
        // Turns alternate, as the full-speed rounds rotate.
        let order = if i % 2 == 0 {
            [Side::Gatehouse, Side::Pgbench]
        } else {
            [Side::Pgbench, Side::Gatehouse]
        };
        for (k, side) in order.into_iter().enumerate() {
            let slot = usize::from(side == Side::Pgbench);
            if !rate_steps::keep_stepping(&passed[slot]) {
                continue;
            }
            let base = (i as u64 * 2 + k as u64) * step_ms;
            bar.set_prefix(format!("{rate:>5}/s offered: {}", side.label()));
            let figures = if side == Side::Pgbench {
                Figures::pgbench(
                    pgbench
                        .run(Load::Rate(rate), plan.step_s, &bar, base)
                        .await
                        .with_context(|| format!("pgbench at {rate}/s"))?,
                    plan.step_s,
                )
            } else {
                let run = rate_steps::open_loop(
                    &main.store,
                    &main.tenants,
                    plan.clients,
                    rate,
                    length,
                    &bar,
                    base,
                )
                .await;
                m.outcomes = m.outcomes.plus(&run.recorder);
                Figures::gatehouse(&run)
            };
            let ok = rate_steps::passes(rate, figures.tps, figures.p99_ms);
            passed[slot].push(ok);
            log_if_hidden(
                &bar,
                &format!(
                    "{rate:>5}/s offered, {}: {:.0} tx/s, p99 {:.2} ms{}",
                    side.label(),
                    figures.tps,
                    figures.p99_ms,
                    if ok { "" } else { " — over the limit" }
                ),
            );
            if side == Side::Pgbench {
                row.pgbench = Some(figures);
            } else {
                row.gatehouse = Some(figures);
            }
        }
        if row.gatehouse.is_none() && row.pgbench.is_none() {
            break;
        }
        m.steps.push(row);
    }
    bar.finish_and_clear();
    Ok(())
}

/// On a terminal the bar shows progress; in a log (CI), one line per run.
fn log_if_hidden(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchDbArgs,
    }

    fn plan(flags: &[&str]) -> Plan {
        let cli = Cli::parse_from(std::iter::once("bench").chain(flags.iter().copied()));
        Plan::from_args(&cli.args)
    }

    #[test]
    fn quick_is_short_and_flags_override_it() {
        let quick = plan(&["--quick"]);
        assert_eq!((quick.full_speed_s, quick.rounds, quick.step_s), (3, 1, 2));
        assert_eq!(quick.rates, [250, 500]);
        let full = plan(&[]);
        assert_eq!((full.full_speed_s, full.rounds, full.step_s), (6, 5, 10));
        let custom = plan(&[
            "--quick",
            "--rates",
            "900,300",
            "--step-for",
            "1500ms",
            "--full-speed-for",
            "5s",
            "--clients",
            "8",
        ]);
        assert_eq!(custom.rates, [300, 900]);
        // pgbench's -T takes whole seconds: rounded up, never to zero.
        assert_eq!(
            (custom.step_s, custom.full_speed_s, custom.clients),
            (2, 5, 8)
        );
    }
}
