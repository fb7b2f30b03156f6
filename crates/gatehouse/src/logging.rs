use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::otel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Installs the global subscriber. Filter from `RUST_LOG` (default `info`).
/// Logs go to stderr so that stdout stays free for reports. With an OTLP
/// endpoint configured, spans are also exported ([`otel`]); the returned
/// handle flushes them at exit. Call inside the Tokio runtime.
pub fn init(format: LogFormat, service: &str) -> anyhow::Result<Option<otel::Export>> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new("info"))
        .map_err(|e| anyhow::anyhow!("RUST_LOG is not a valid filter: {e}"))?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (otel_layer, export) = if otel::configured() {
        let (layer, export) = otel::layer(service)?;
        (Some(layer), Some(export))
    } else {
        (None, None)
    };
    let text = (!json).then(|| fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))?;
    Ok(export)
}
