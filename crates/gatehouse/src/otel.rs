//! OpenTelemetry export of spans, off unless an OTLP endpoint is configured.
//!
//! Logs carry the envelope id and trace id of the event they handle either
//! way; export is for operators who run a tracing backend. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, spans go over OTLP/HTTP (protobuf) to that collector, batched, the
//! exporter reading the other standard `OTEL_EXPORTER_OTLP_*` variables
//! itself (headers, timeout, compression). The worker's message spans join
//! the trace the gateway started for the event (the trace id is the
//! envelope id, see `wire::trace`), so one trace shows an event from
//! Discord to its database effect.
//!
//! The HTTP client is hyper's plain one (already built for the HTTP
//! servers): point it at a collector on the same host or pod (an agent or
//! sidecar at `http://127.0.0.1:4318`), which forwards over TLS.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Whether export is configured (an endpoint is set and not blank).
pub fn configured() -> bool {
    [ENDPOINT, TRACES_ENDPOINT]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// The exporting half: flushed and stopped by [`Export::shutdown`] so that
/// the last spans leave before the process exits.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "OpenTelemetry export did not flush its last spans");
        }
    }
}

/// The layer that turns spans into OpenTelemetry spans, and its exporter.
/// Needs a Tokio runtime (the batch processor and the HTTP client run on
/// it). `service` names the process (`OTEL_SERVICE_NAME` wins).
pub fn layer<S>(service: &str) -> anyhow::Result<(impl tracing_subscriber::Layer<S>, Export)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| {
            anyhow::anyhow!(
                "{ENDPOINT}: cannot set up OpenTelemetry export: {e}; use an http:// URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318"
            )
        })?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("gatehouse");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Export { provider },
    ))
}
