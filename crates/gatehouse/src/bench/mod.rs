//! `gatehouse bench …`: load generators that print a report, optionally
//! write it as JSON, and fail when a threshold is missed. Figures quoted
//! anywhere in the project come from here, never from timed tests.

pub mod db;
#[cfg(feature = "sim")]
pub mod fairness;
#[cfg(feature = "sim")]
pub mod gateway;
mod load_profile;
mod machine;
#[cfg(feature = "sim")]
pub mod pipeline;
pub mod plot;
mod recorder;
#[cfg(feature = "sim")]
pub mod roles;
#[cfg(feature = "sim")]
pub mod sync;
#[cfg(feature = "sim")]
mod worker_metrics;

use std::path::Path;

use anyhow::Context;

/// Writes a report as pretty JSON, creating the directory it goes in.
pub fn write_json(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("serialising the report")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the JSON report", dir.display()))?;
    }
    std::fs::write(path, json + "\n")
        .with_context(|| format!("writing the JSON report to {}", path.display()))
}
