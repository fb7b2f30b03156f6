//! Running a binary as an operator would, and reading its one error line.

use std::process::{Command, Output};

/// Runs `bin` with `args` and only `env` (plus `PATH`): a variable set on
/// the machine running the tests cannot make a configuration test pass.
/// Logs are plain text, so tests can read them.
pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error line: the last one starting `error:` (logs may precede it).
pub fn error_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned()
}
