//! Logs and traces for the process.
//!
//! Logs go to stderr, filtered by `RUST_LOG`. Spans (HTTP requests, database
//! queries, socket events, writer batches, bus publish and receive: every
//! span under [`aurum_actors::trace::TARGET`]) go to an OpenTelemetry
//! collector over OTLP/HTTP with protobuf, configured by the standard
//! variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns export on, `OTEL_SERVICE_NAME`
//! (default `aurum`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
//!
//! With no endpoint, no layer wants the spans, so they are never built: the
//! chat path costs what it did before traces existed.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The process's tracing set-up; dropping it sends the spans still
/// buffered (within the exporter's timeout) and stops the export thread.
#[must_use = "dropping it stops the export of spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("traces: the last spans could not be sent: {error}");
        }
    }
}

/// Installs the process's subscriber: the log output, and the span export
/// when configured. `node` (the serving node's id) becomes the resource's
/// `service.instance.id`, so spans from several nodes can be told apart.
/// A second call (as in tests) keeps the first subscriber.
pub fn init(node: Option<String>) -> Telemetry {
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans for export stay out of the log output, whatever RUST_LOG says:
    // otherwise a verbose log level would build every span of the chat path
    // even with export off.
    let logs = match format!("{}=off", aurum_actors::trace::TARGET).parse() {
        Ok(directive) => logs.add_directive(directive),
        Err(_) => logs,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(logs);
    let provider = match export_wanted() {
        Some(ask) => match provider(node) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("traces: {ask} is set but spans cannot be exported: {error}");
                None
            }
        },
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("aurum"))
            .with_filter(Targets::new().with_target(aurum_actors::trace::TARGET, tracing::Level::INFO))
    });
    let _ = tracing_subscriber::registry().with(fmt).with(spans).try_init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// The variable that asks for export, unless the standard ones turn it off.
fn export_wanted() -> Option<&'static str> {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let is = |name: &str, wanted: &str| {
        std::env::var(name).is_ok_and(|value| value.trim().eq_ignore_ascii_case(wanted))
    };
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return None;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find(|name| set(name))
}

fn provider(node: Option<String>) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(protocol) = std::env::var(name)
            && protocol != "http/protobuf"
        {
            eprintln!("traces: {name}={protocol} is not supported; exporting http/protobuf");
        }
    }
    // The endpoint, headers and timeout come from the OTEL_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    // Resource::builder() reads OTEL_SERVICE_NAME and
    // OTEL_RESOURCE_ATTRIBUTES; the name defaults to ours, not the SDK's
    // `unknown_service`.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let mut resource =
        Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        resource = resource.with_service_name("aurum");
    }
    if let Some(node) = node {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", node));
    }
    // The batch processor exports from a thread of its own (blocking
    // client), at its OTEL_BSP_* pace; a full queue drops spans, never
    // blocks the thread that ended them.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
