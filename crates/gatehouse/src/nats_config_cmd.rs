//! `gatehouse nats-config`: the nats-server `authorization` block with one
//! user per process and what each may publish and subscribe to, derived
//! from the names the programs use (`bus::authorization`). Passwords are
//! not in it: the server reads each from its environment.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bus::authorization::{Authorization, Scope};

#[derive(Debug, clap::Args)]
pub struct NatsConfigArgs {
    /// The deployment's namespace (NATS_NAMESPACE of its processes); empty:
    /// the root namespace, as in production.
    #[arg(long, env = "NATS_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Serve the root namespace and every prefixed one (a server shared by
    /// test runs: the local stack); --namespace is then ignored. Looser:
    /// JetStream names of one namespace cannot be told from another's.
    #[arg(long)]
    pub any_namespace: bool,

    /// The workers' consumer name (WORKER_CONSUMER).
    #[arg(long, env = "WORKER_CONSUMER", default_value = "worker")]
    pub worker_consumer: String,

    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: NatsConfigArgs) -> anyhow::Result<ExitCode> {
    let scope = if args.any_namespace {
        Scope::Any
    } else {
        Scope::One(crate::nats_args::namespace(&args.namespace)?)
    };
    let valid = !args.worker_consumer.is_empty()
        && args
            .worker_consumer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    anyhow::ensure!(
        valid,
        "WORKER_CONSUMER (--worker-consumer): use letters, digits, '_' and '-' (it names a durable JetStream consumer)"
    );
    let text = bus::authorization::render(&Authorization {
        worker_consumer: args.worker_consumer,
        ..Authorization::new(scope)
    });
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("--output {}: cannot write", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
