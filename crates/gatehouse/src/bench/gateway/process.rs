//! The gateway under test: `gatehouse gateway` as a child process, the
//! production binary and code path, so that the memory it is measured by
//! is its own and nothing of the simulator's or the benchmark's.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// Where the child connects and how it publishes.
pub struct Launch<'a> {
    pub token: &'a str,
    pub shards: u32,
    pub gateway_url: String,
    pub api_url: String,
    pub nats_url: &'a str,
    pub namespace: &'a str,
    pub storage: &'a str,
    pub publish_window: usize,
    pub threads: u16,
    pub login: Option<(String, settings::Secret)>,
}

/// The gateway's shard leases, long enough to outlast the pause in which a
/// storm is queued. A gateway that cannot renew its leases for half their
/// TTL stops its shards, as it must in production (another process may take
/// them over); after the default 10 s TTL's 5 s that pause cost every shard
/// its connection, and the resumed sessions a replay of the whole storm that
/// the gateway, the simulator and NATS then did twice.
const PAUSABLE_LEASE_TTL: &str = "10m";

pub struct GatewayProcess {
    child: Child,
    pid: u32,
}

/// How the child ended.
pub struct Stopped {
    pub shutdown_s: f64,
    pub exit_code: Option<i32>,
}

impl GatewayProcess {
    pub fn spawn(launch: &Launch<'_>) -> anyhow::Result<GatewayProcess> {
        let exe = std::env::current_exe().context("locating the gatehouse binary")?;
        let mut command = Command::new(exe);
        // A clean environment: a PUBLISH_WINDOW or STREAM_STORAGE left in
        // the shell would otherwise change what is measured without the
        // report saying so.
        command
            .arg("gateway")
            .env_clear()
            .env("DISCORD_TOKEN", launch.token)
            .env("TOTAL_SHARDS", launch.shards.to_string())
            .env("IDENTIFY_QUEUE", "unlimited")
            .env("DISCORD_GATEWAY_URL", &launch.gateway_url)
            .env("DISCORD_API_URL", &launch.api_url)
            .env("NATS_URL", launch.nats_url)
            .env("NATS_NAMESPACE", launch.namespace)
            .env("EVENTS_STORAGE", launch.storage)
            .env("PUBLISH_WINDOW", launch.publish_window.to_string())
            .env("GATEWAY_THREADS", launch.threads.to_string())
            .env("SHARD_LEASE_TTL", PAUSABLE_LEASE_TTL)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // As production runs it: with the gateway's own NATS user.
        if let Some((user, password)) = &launch.login {
            command
                .env("NATS_USER", user)
                .env("NATS_PASSWORD", password.expose());
        }
        let child = command.spawn().context("starting `gatehouse gateway`")?;
        let pid = child
            .id()
            .context("`gatehouse gateway` exited before its pid was read")?;
        Ok(GatewayProcess { child, pid })
    }

    /// Fails if the gateway has exited: every figure after that is void.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait().context("checking on the gateway")? {
            Some(status) => anyhow::bail!("the gateway exited early ({status})"),
            None => Ok(()),
        }
    }

    /// Resident memory now (`VmRSS`), MB.
    pub fn rss_mb(&self) -> anyhow::Result<f64> {
        self.status_mb("VmRSS:")
    }

    /// The highest resident memory so far (`VmHWM`), MB.
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        self.status_mb("VmHWM:")
    }

    /// CPU time the gateway has used so far, user and system, seconds.
    pub fn cpu_s(&self) -> anyhow::Result<f64> {
        cpu_s(&self.pid.to_string())
    }

    fn status_mb(&self, field: &str) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path} for the gateway's memory"))?;
        status_kib(&status, field)
            .map(kib_to_mb)
            .with_context(|| format!("{path} has no readable {field} line"))
    }

    /// Freezes the gateway (SIGSTOP): Discord's events queue up at the
    /// simulator, as they do while a connection is slow to be read.
    pub fn pause(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.signal("-STOP"), "kill -STOP {} failed", self.pid);
        Ok(())
    }

    /// Lets a paused gateway run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.signal("-CONT"), "kill -CONT {} failed", self.pid);
        Ok(())
    }

    fn signal(&self, signal: &str) -> bool {
        std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERM, as an orchestrator stops it, and the time to exit.
    pub async fn stop(mut self) -> Stopped {
        // A gateway left paused by a failed step would not act on SIGTERM.
        self.signal("-CONT");
        let started = Instant::now();
        let signalled = self.signal("-TERM");
        let waited = if signalled {
            tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await
        } else {
            Ok(Err(std::io::Error::other("kill -TERM failed")))
        };
        let exit_code = match waited {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        };
        Stopped {
            shutdown_s: started.elapsed().as_secs_f64(),
            exit_code,
        }
    }
}

/// CPU time used so far by process `pid` (`self` for this one), seconds.
pub fn cpu_s(pid: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).with_context(|| format!("reading {path} for CPU time"))?;
    stat_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .with_context(|| format!("{path} has no readable utime and stime"))
}

/// The machine's CPU time so far, all of it and what the hypervisor took
/// for other guests (steal), from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCpu {
    total: u64,
    steal: u64,
}

impl MachineCpu {
    pub fn now() -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        machine_cpu(&stat).context("/proc/stat has no readable cpu line")
    }

    /// The share of the machine's CPU time since `earlier` that the
    /// hypervisor gave to other guests, %: time this run's processes were
    /// ready to run and could not.
    pub fn steal_pct_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(earlier.steal) as f64 * 100.0 / total as f64
    }
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`:
/// the first eight make up the total (guest time is already in user).
fn machine_cpu(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (ticks.len() == 8).then(|| MachineCpu {
        total: ticks.iter().sum(),
        steal: ticks[7],
    })
}

/// The unit of /proc's CPU times: the kernel reports them in USER_HZ,
/// 100 on every Linux architecture this runs on.
const USER_HZ: f64 = 100.0;

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from after its closing parenthesis.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A size line of `/proc/<pid>/status` (`VmRSS:   12345 kB`), in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// The kernel's "kB" is KiB; reported in MB (10^6 bytes), the unit the
/// target is stated in.
fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_by_their_field_and_unit() {
        let status = "Name:\tgatehouse\nVmHWM:\t  20480 kB\nVmRSS:\t   16384 kB\nThreads:\t3\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(16_384));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        // A line in another unit is not silently taken as kB.
        assert_eq!(status_kib("VmRSS:\t16 MB\n", "VmRSS:"), None);
        assert!((kib_to_mb(1000) - 1.024).abs() < 1e-9);
    }

    #[test]
    fn steal_is_the_hypervisors_share_of_the_machines_time() {
        let before = "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n";
        let after = "cpu  200 0 100 1500 20 0 0 140 0 0\ncpu0 100 0 50 750 10 0 0 70 0 0\n";
        let (before, after) = (machine_cpu(before).unwrap(), machine_cpu(after).unwrap());
        // 100 of the 960 ticks in between were stolen.
        assert!((after.steal_pct_since(&before) - 100.0 * 100.0 / 960.0).abs() < 1e-9);
        assert_eq!(after.steal_pct_since(&after), 0.0);
        // Kernels before steal accounting have shorter lines: not read as zero.
        assert_eq!(machine_cpu("cpu  1 2 3 4\n"), None);
        assert_eq!(machine_cpu("intr 1 2 3\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A name with a space and a parenthesis would shift naive splitting.
        let stat =
            "4242 (tokio rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(stat_cpu_ticks("4242 (gatehouse) S 1"), None);
    }
}
