//! pgbench running a script of `deploy/bench/` as a child process: the
//! client that adds nothing, whose figures are the limit Gatehouse's are
//! read against. `bench db` runs the tenant transaction
//! (`tenant_tx.pgbench`); `bench pipeline` a single-statement one.
//!
//! The script is compiled into the binary and written to a scratch
//! directory, so a bench runs from any directory and always runs the
//! script of its own version. Latencies come from pgbench's
//! per-transaction logs (`-l`): with `-R` pgbench measures each one from
//! its scheduled start, as the Gatehouse side does, so a stall shows in the
//! percentiles instead of delaying the transactions behind it.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::Command,
};

use super::conninfo::ConnInfo;

const LOG_PREFIX: &str = "pgbench_log";

/// A pgbench script of `deploy/bench/`, embedded with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// Its file name in `deploy/bench/` (and in the scratch directory).
    pub file: &'static str,
    pub text: &'static str,
}

/// The tenant transaction of `bench db`.
pub const TENANT_TX: Script = Script {
    file: "tenant_tx.pgbench",
    text: include_str!("../../../../../deploy/bench/tenant_tx.pgbench"),
};

/// How pgbench is to run the script: the same clients and data as the
/// Gatehouse side.
pub struct Pgbench {
    pub program: PathBuf,
    pub conn: ConnInfo,
    pub clients: u32,
    script: Script,
    /// The script's variables (`-D name=value`).
    defines: Vec<(&'static str, String)>,
    scratch: Scratch,
    runs: u32,
}

/// At full speed, or at a fixed rate (`-R`, transactions/s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    FullSpeed,
    Rate(u32),
}

/// One pgbench run's figures.
pub struct Run {
    pub summary: Summary,
    /// Latency of each logged transaction, µs; from its scheduled start
    /// under `-R`.
    pub latency: Histogram<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub processed: u64,
    pub failed: u64,
    pub tps: f64,
}

impl Pgbench {
    /// Checks pgbench runs and writes the script where it can read it.
    pub async fn prepare(
        program: PathBuf,
        conn: ConnInfo,
        clients: u32,
        script: Script,
        defines: Vec<(&'static str, String)>,
    ) -> anyhow::Result<(Pgbench, String)> {
        let version = version(&program).await?;
        let scratch = Scratch::create()?;
        let path = scratch.script(&script);
        std::fs::write(&path, script.text)
            .with_context(|| format!("writing the pgbench script to {}", path.display()))?;
        Ok((
            Pgbench {
                program,
                conn,
                clients,
                script,
                defines,
                scratch,
                runs: 0,
            },
            version,
        ))
    }

    /// Threads as the brief fixes them (`-j 2`), never more than clients.
    pub fn threads(&self) -> u32 {
        self.clients.min(2)
    }

    /// The command line of one run, the password excepted (it goes in the
    /// environment).
    fn args(&self, load: Load, seconds: u64, log_prefix: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            // The script's tables are Gatehouse's, not pgbench's own:
            // nothing to vacuum.
            "-n".into(),
            "-M".into(),
            "extended".into(),
            "-f".into(),
            self.scratch.script(&self.script).into(),
            "-c".into(),
            self.clients.to_string().into(),
            "-j".into(),
            self.threads().to_string().into(),
            "-T".into(),
            seconds.max(1).to_string().into(),
            "-P".into(),
            "1".into(),
            "-l".into(),
            "--log-prefix".into(),
            log_prefix.into(),
        ];
        for (name, value) in &self.defines {
            args.push("-D".into());
            args.push(format!("{name}={value}").into());
        }
        if let Load::Rate(rate) = load {
            args.push("-R".into());
            args.push(rate.to_string().into());
        }
        args.extend(self.conn.args());
        if let Some(db) = self.conn.database() {
            args.push(db.into());
        }
        args
    }

    /// Runs pgbench for `seconds`, showing its per-second progress on `bar`
    /// (whose position advances from `base`, in ms).
    pub async fn run(
        &mut self,
        load: Load,
        seconds: u64,
        bar: &ProgressBar,
        base: u64,
    ) -> anyhow::Result<Run> {
        self.runs += 1;
        let dir = self.scratch.0.join(format!("run{}", self.runs));
        std::fs::create_dir(&dir)
            .with_context(|| format!("creating {} for pgbench's logs", dir.display()))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args(load, seconds, &dir.join(LOG_PREFIX)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ctrl-C or an error on our side must not leave it running.
            .kill_on_drop(true);
        self.conn.apply_env(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let mut stdout = child.stdout.take().context("pgbench's stdout")?;
        let stderr = child.stderr.take().context("pgbench's stderr")?;
        let progress = Arc::new(Mutex::new(String::new()));
        // Its progress lines go to the bar; anything else is kept to explain
        // a failure.
        let other_lines = tokio::spawn({
            let progress = progress.clone();
            async move {
                let mut kept = Vec::new();
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(p) = line.strip_prefix("progress: ") {
                        *progress
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = p.to_owned();
                    } else if kept.len() < 20 {
                        kept.push(line);
                    }
                }
                kept
            }
        });
        let summary_text = tokio::spawn(async move {
            let mut text = String::new();
            stdout.read_to_string(&mut text).await.map(|_| text)
        });
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.context("waiting for pgbench")?,
                _ = tick.tick() => {
                    let elapsed = started.elapsed().min(Duration::from_secs(seconds));
                    bar.set_position(base + elapsed.as_millis() as u64);
                    let line = progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                    if !line.is_empty() {
                        bar.set_message(format!("pgbench: {line}"));
                    }
                }
            }
        };
        let stdout = summary_text
            .await
            .context("reading pgbench's output")?
            .context("reading pgbench's output")?;
        let stderr = other_lines.await.unwrap_or_default();
        // pgbench exits 2 when some transactions failed and still prints its
        // summary; without a summary there is nothing to report.
        let Some(summary) = parse_summary(&stdout) else {
            bail!(
                "pgbench {status} without a summary: {}",
                settings::redact(&stderr.join(" / "))
            );
        };
        let latency = read_logs(&dir)?;
        // The logs can be large at high rates; the figures are in memory now.
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Run { summary, latency })
    }
}

async fn version(program: &Path) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .await
        .with_context(|| {
            format!(
                "running {} (the benchmark measures the database with pgbench: install \
                 postgresql-client, or pass --pgbench PATH)",
                program.display()
            )
        })?;
    anyhow::ensure!(
        out.status.success(),
        "{} --version: {}",
        program.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The figures of pgbench's closing summary (on stdout); `None` when it
/// printed none (it failed before running).
pub fn parse_summary(text: &str) -> Option<Summary> {
    let mut summary = Summary::default();
    let mut seen_tps = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            // `-t` prints "done/planned"; `-T`, the count alone.
            summary.processed = first_number(rest.split('/').next()?)? as u64;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            summary.failed = first_number(rest)? as u64;
        } else if let Some(rest) = line.strip_prefix("tps =") {
            summary.tps = first_number(rest)?;
            seen_tps = true;
        }
    }
    seen_tps.then_some(summary)
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// One line of a per-transaction log:
/// `client_id transaction_no time script_no time_epoch time_us [schedule_lag]`
/// where `time` is µs, or `failed`/`skipped`.
#[derive(Debug, PartialEq, Eq)]
pub enum Logged {
    Latency(u64),
    Failed,
    Skipped,
}

pub fn parse_log_line(line: &str) -> Option<Logged> {
    match line.split_whitespace().nth(2)? {
        "failed" => Some(Logged::Failed),
        "skipped" => Some(Logged::Skipped),
        micros => micros.parse().ok().map(Logged::Latency),
    }
}

/// Every thread's log of a run, into one histogram (µs, as the Gatehouse
/// side records).
fn read_logs(dir: &Path) -> anyhow::Result<Histogram<u64>> {
    // The Gatehouse side's bounds: 1 µs to 60 s, 3 significant figures.
    let mut hist = Histogram::new_with_bounds(1, 60_000_000, 3)
        .context("a histogram for pgbench's latencies")?;
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(LOG_PREFIX))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading pgbench's log {}", path.display()))?;
        for line in text.lines() {
            if let Some(Logged::Latency(micros)) = parse_log_line(line) {
                hist.saturating_record(micros.max(1));
            }
        }
    }
    Ok(hist)
}

/// A directory of our own under the system's temporary directory, removed
/// when dropped (also when the run fails).
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("gatehouse-bench-db-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} for pgbench", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn script(&self, script: &Script) -> PathBuf {
        self.0.join(script.file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // pgbench 15's summary of a `-R` run, as printed on stdout.
    const SUMMARY: &str = "\
pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/x/tenant_tx.pgbench
scaling factor: 1
query mode: extended
number of clients: 16
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 1497
number of failed transactions: 2 (0.133%)
latency average = 3.112 ms
latency stddev = 1.874 ms
rate limit schedule lag: avg 0.112 (max 2.301) ms
initial connection time = 21.406 ms
tps = 499.120734 (without initial connection time)
";

    #[test]
    fn the_summary_gives_processed_failed_and_tps() {
        let s = parse_summary(SUMMARY).unwrap();
        assert_eq!(s.processed, 1497);
        assert_eq!(s.failed, 2);
        assert!((s.tps - 499.120734).abs() < 1e-6);
        // A run that failed at connection prints no tps line.
        assert_eq!(
            parse_summary("pgbench (15.20)\nconnection to server failed\n"),
            None
        );
        // `-t` runs print done/planned.
        let t = parse_summary("number of transactions actually processed: 80/100\ntps = 5.0 (x)\n");
        assert_eq!(t.map(|s| s.processed), Some(80));
    }

    #[test]
    fn log_lines_give_latency_or_failure() {
        assert_eq!(
            parse_log_line("3 17 2841 0 1733221234 123456 118"),
            Some(Logged::Latency(2841))
        );
        assert_eq!(
            parse_log_line("0 5 failed 0 1733221234 123456"),
            Some(Logged::Failed)
        );
        assert_eq!(
            parse_log_line("0 5 skipped 0 1733221234 123456 9000"),
            Some(Logged::Skipped)
        );
        assert_eq!(parse_log_line(""), None);
        assert_eq!(parse_log_line("0 5 x1 0"), None);
    }

    #[test]
    fn the_command_line_matches_the_gatehouse_side_and_holds_no_password() {
        let conn = ConnInfo::parse("postgresql://app:hunter2@127.0.0.1:6432/bench").unwrap();
        let bench = Pgbench {
            program: "pgbench".into(),
            conn,
            clients: 16,
            script: TENANT_TX,
            defines: vec![
                ("communities", "50".to_owned()),
                ("members", "20".to_owned()),
            ],
            scratch: Scratch(PathBuf::from("/nonexistent/scratch")),
            runs: 0,
        };
        let args: Vec<String> = bench
            .args(Load::Rate(750), 10, Path::new("/tmp/l/pgbench_log"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        for expected in [
            "-M extended",
            "-c 16",
            "-j 2",
            "-T 10",
            "-R 750",
            "-D communities=50",
            "-D members=20",
            "-f /nonexistent/scratch/tenant_tx.pgbench",
            "-h 127.0.0.1 -p 6432 -U app",
        ] {
            assert!(
                joined.contains(expected),
                "{expected:?} missing from {joined}"
            );
        }
        assert_eq!(args.last().map(String::as_str), Some("bench"));
        assert!(!joined.contains("hunter2"));
        let full = bench.args(Load::FullSpeed, 3, Path::new("/tmp/l"));
        assert!(!full.iter().any(|a| a == "-R"));
        // One client: one thread (pgbench refuses more threads than clients).
        let one = Pgbench {
            clients: 1,
            ..bench
        };
        assert!(one
            .args(Load::FullSpeed, 3, Path::new("/tmp/l"))
            .windows(2)
            .any(|w| w[0] == "-j" && w[1] == "1"));
    }

    #[test]
    fn the_embedded_script_sends_the_stores_statements() {
        // The ratio compares clients, so both must ask the database for
        // the same work: the functions the store calls (planned once per
        // server connection), reading the same columns.
        let script = TENANT_TX.text;
        let tenant = "(current_setting('app.current_tenant')::uuid";
        for call in [
            format!("SELECT * FROM profile_of_member{tenant}, :u);"),
            format!(
                "SELECT {} FROM enabled_rules{tenant});",
                store::repo::RULE_COLUMNS
            ),
            format!("SELECT * FROM save_member_profile{tenant}, :u, '{{}}', now());"),
            format!(
                "SELECT {} FROM append_audit_entry{tenant}, ",
                store::repo::AUDIT_COLUMNS
            ),
        ] {
            assert!(script.contains(&call), "{call} missing from the script");
        }
        // The profile's functions return the store's profile type, which
        // holds exactly the columns the store reads elsewhere (a
        // repository test compares them); no other statement reads a table.
        for table in ["FROM profiles", "FROM eligibility_rules", "INTO "] {
            assert!(!script.contains(table), "the script sends {table} itself");
        }
    }

    #[test]
    fn the_embedded_script_takes_its_ranges_from_variables() {
        let script = TENANT_TX.text;
        assert!(script.contains("random(0, :communities - 1)"));
        assert!(script.contains("random(0, :members - 1)"));
        assert!(script.contains(&super::super::workload::BENCH_GUILD_BASE.to_string()));
        assert!(script.contains(&super::super::workload::BENCH_USER_BASE.to_string()));
    }
}
