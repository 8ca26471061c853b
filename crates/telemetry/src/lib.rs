//! Telemetry shared by every service: `tracing` set-up (`RUST_LOG`, text or JSON logs),
//! OpenTelemetry export over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context
//! in and out of NATS and HTTP headers, and the Prometheus `/metrics` handler.

#![forbid(unsafe_code)]

mod metrics;
mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use hookbus_config::{LogFormat, TelemetryConfig};
pub use metrics::{metrics_router, render};
pub use opentelemetry::Context as TraceContext;
pub use prometheus_client;
pub use propagation::{
    HttpExtractor, HttpInjector, NatsExtractor, NatsInjector, context_from_http, context_from_nats,
    inject_into_http, inject_into_nats, link_from_nats, outgoing_context, set_parent_from_nats,
    set_span_parent, trace_headers_of,
};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the trace pipeline alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber for `service`.
///
/// When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans become OpenTelemetry spans exported over
/// OTLP/HTTP, and `hookbus=debug` joins `RUST_LOG`'s filter so that hookbus's own debug spans
/// are among them (a `RUST_LOG` naming a hookbus crate more precisely wins). When it is not, no
/// OpenTelemetry layer is installed and spans cost only what logging costs; trace context still
/// crosses the bus, through [`outgoing_context`].
pub fn init(service: &str, config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.to_owned());
    opentelemetry::global::set_tracer_provider(provider.clone());

    // One global filter, no per-layer filters: with a per-layer filter on the OpenTelemetry layer,
    // a whole callsite (the consumer's `consume` span) was now and then left out of the export
    // for the life of the process, though the log layer saw it. RUST_LOG decides, and when spans
    // are exported hookbus's own debug spans (the ingress request, the egress delivery) are
    // added, so with export on hookbus's debug logs appear too.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if exporting {
        filter = filter.add_directive("hookbus=debug".parse().expect("a valid directive"));
    }
    let otel = exporting.then(|| tracing_opentelemetry::layer().with_tracer(tracer));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match config.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}
