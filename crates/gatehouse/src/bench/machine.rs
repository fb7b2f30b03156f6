//! The machine a benchmark ran on, for its report: figures from a 2-core
//! shared runner and from a workstation are not the same figures.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
}

impl Machine {
    pub fn here() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Machine {
            cores,
            memory_gib: total_memory_kib().map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0)),
        }
    }
}

/// `MemTotal` from /proc/meminfo (Linux); `None` elsewhere.
fn total_memory_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_cores_and_memory() {
        let m = Machine::here();
        assert!(m.cores >= 1);
        assert!(m.memory_gib > 0.0, "{m:?}");
    }
}
