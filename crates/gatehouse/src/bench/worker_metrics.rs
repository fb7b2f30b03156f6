//! `--worker-metrics DIR`: the in-process worker's own metrics (its
//! `/metrics` text, cumulative since the run started) saved at the points a
//! benchmark names, so that the difference of two files is what happened
//! between them (handler times, queue, delivery and pool waits) without a
//! temporary build.

use std::path::Path;

use anyhow::Context;

/// Installs the worker's metrics recorder in this process, if `dir` is
/// asked for, and creates `dir`. Before the world starts: what the worker
/// records earlier is lost.
pub(crate) fn start(dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating --worker-metrics {}", dir.display()))?;
    anyhow::ensure!(
        worker::telemetry::install_recorder(),
        "--worker-metrics: this process already has a metrics recorder of its own"
    );
    Ok(())
}

/// Writes the worker's metrics as they are now to `dir/<name>.prom`, if
/// `dir` is asked for.
pub(crate) fn save(dir: Option<&Path>, name: &str) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    let text = worker::telemetry::render()
        .context("--worker-metrics: the worker's metrics recorder is not this process's")?;
    let path = dir.join(format!("{name}.prom"));
    std::fs::write(&path, text)
        .with_context(|| format!("writing the worker's metrics to {}", path.display()))
}
