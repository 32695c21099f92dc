//! Spans via OpenTelemetry (feature `otel`), exported over OTLP/HTTP as protobuf when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and off otherwise.
//! The SDK reads the other standard variables itself: `OTEL_SERVICE_NAME` (default: the service's
//! name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default:
//! parent-based, always on), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`.
//!
//! tracing-opentelemetry turns tracing spans into OpenTelemetry spans and the events inside them into
//! span events; a span's `otel.name` and `otel.kind` fields name it and set its kind (the JSON layer
//! never writes them). [`join`] makes a request's span a child of the caller's ([`RequestTrace`]) and
//! returns the ids it is exported with, which the service writes on its log lines.
//!
//! Export is batched on a thread of the SDK's own, off the request path. A process that may be frozen
//! between requests (Lambda) calls [`flush`] before it answers.
//!
//! Must never: slow a request by waiting on the collector, or fail one because the collector is down.

use std::sync::OnceLock;

use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

use crate::trace::{RequestTrace, SpanId, TraceId};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the standard variables name an OTLP endpoint for traces.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Whether spans are exported (the layer is installed).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// A long-running process: batches go out in the background, a failed export is retried with
    /// the OTLP backoff.
    Background,
    /// A process that may be frozen between requests (Lambda): it calls [`flush`] before it answers,
    /// which must not wait on retries, so a failed export is dropped and said in a WARN line. (The
    /// collector there is a local one, which retries upstream itself.)
    Flushed,
}

/// The layer that exports `service`'s spans, when an endpoint is configured (the first call only);
/// says on stderr why not when the exporter cannot be made.
pub fn layer<S>(
    service: &'static str,
    version: &'static str,
    export: Export,
) -> Option<OpenTelemetryLayer<S, SdkTracer>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if !configured() || enabled() {
        return None;
    }
    let retries = match export {
        Export::Background => RetryPolicy::default(),
        Export::Flushed => RetryPolicy::disabled(),
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_retry_policy(retries)
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OpenTelemetry export is off: {error}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", version))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(service);
    PROVIDER.set(provider).ok()?;
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false),
    )
}

/// Make `span` a child of `trace`'s caller, when it came with one, and return the ids `span` is
/// exported with: the caller's trace id, or the SDK's new one.
pub fn join(span: &tracing::Span, trace: &RequestTrace) -> (TraceId, SpanId) {
    if let Some(parent) = trace.parent {
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            parent.trace_id.as_u128().into(),
            parent.parent_id.as_u64().into(),
            flags,
            true,
            TraceState::default(),
        );
        // Fails only for a span already started, which a new request's is not.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let exported = context.span().span_context().clone();
    let trace_id = TraceId::from_u128(u128::from_be_bytes(exported.trace_id().to_bytes()));
    let span_id = SpanId::from_u64(u64::from_be_bytes(exported.span_id().to_bytes()));
    trace_id
        .zip(span_id)
        .unwrap_or((trace.trace_id, trace.span_id))
}

/// Set an attribute of `span`'s exported span (nothing when export is off).
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    if enabled() {
        span.set_attribute(Key::from_static_str(key), value);
    }
}

/// Mark `span`'s exported span as failed (a server error).
pub fn failed(span: &tracing::Span, description: &'static str) {
    if enabled() {
        span.set_status(opentelemetry::trace::Status::error(description));
    }
}

/// Export the spans that ended so far, waiting for it; a failure is a WARN line.
pub fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::warn!(message = "OpenTelemetry spans not exported.", error = %error);
    }
}

/// Export what is left and stop the exporter (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}
