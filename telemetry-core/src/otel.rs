//! Spans via OpenTelemetry (feature `otel`), exported over OTLP/HTTP as protobuf when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and off otherwise.
//! The SDK reads the other standard variables itself: `OTEL_SERVICE_NAME` (default: the service's
//! name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, and
//! this module reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default: parent-based,
//! always on) to decide, before a request's span is made, whether it is exported ([`exports`]).
//!
//! tracing-opentelemetry turns tracing spans into OpenTelemetry spans and the events inside them into
//! span events; a span's `otel.name` and `otel.kind` fields name it and set its kind (the JSON layer
//! never writes them). A span's other fields are its attributes, each key once, under the names the
//! service gives ([`AttributeNames`]: the semantic conventions' where a log field means the same).
//! [`join`] makes a request's span a child of the caller's ([`RequestTrace`]) and
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
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::layer;
use tracing_subscriber::registry::LookupSpan;

use crate::trace::{RequestTrace, SpanId, TraceId};

/// The exporter and which requests it exports, once [`layer`] has made them.
struct Exporting {
    provider: SdkTracerProvider,
    sampling: Sampling,
}

static EXPORTING: OnceLock<Exporting> = OnceLock::new();

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
    EXPORTING.get().is_some()
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

/// How a span's tracing fields are named among its exported attributes, where they differ: a field
/// listed is exported under the semantic-convention name given, or not at all (`None`: its value is
/// what the span itself already says, such as its ids, which the log lines need as fields). Every
/// other field is exported under its own name.
pub type AttributeNames = &'static [(&'static str, Option<&'static str>)];

/// The layer that exports `service`'s spans, when an endpoint is configured (the first call only);
/// says on stderr why not when the exporter cannot be made. Attributes are named by `names`.
///
/// Which spans it sees is decided before they are made, so a request that is not exported costs
/// nothing here: a root span is exported only if its call site declares `otel.kind` (the service makes
/// a request's span with it when [`exports`] says so, and without it otherwise), and any other span
/// only inside an exported one. Of the events inside an exported span, those `span_event` accepts
/// become its events (a span event is built, kept and encoded for every line; the log has them all).
pub fn layer<S>(
    service: &'static str,
    version: &'static str,
    export: Export,
    span_event: fn(&tracing::Metadata<'_>) -> bool,
    names: AttributeNames,
) -> Option<impl Layer<S>>
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
    let sampling = Sampling::from_env();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Attributes {
            names,
            next: BatchSpanProcessor::builder(exporter).build(),
        })
        .with_resource(resource)
        // The decision is ours ([`exports`]), made before the span is: what reaches the SDK is kept.
        .with_sampler(Sampler::AlwaysOn)
        .build();
    let tracer = provider.tracer(service);
    EXPORTING.set(Exporting { provider, sampling }).ok()?;
    let seen = move |line: &tracing::Metadata<'_>, cx: &layer::Context<'_, S>| {
        // `cx` shows only the spans this filter let through: the current one is an exported span.
        let inside = cx.lookup_current().is_some();
        if line.is_span() {
            inside || declares_kind(line)
        } else {
            inside && span_event(line)
        }
    };
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            // No busy/idle times (two clock reads per poll) and no OpenTelemetry context made
            // current on every poll: nothing in the process reads it, spans nest through tracing.
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(DynFilterFn::new(seen)),
    )
}

/// Between a span's end and the batch exporter: its attributes named by `names`, each key once. A field
/// recorded again after the span was made is appended by tracing-opentelemetry, not replaced, and the
/// OTLP spec wants every key once: the last value wins.
#[derive(Debug)]
struct Attributes<P> {
    names: AttributeNames,
    next: P,
}

impl<P> Attributes<P> {
    fn tidy(&self, attributes: &mut Vec<KeyValue>) {
        attributes.retain_mut(|attribute| {
            let key = attribute.key.as_str();
            match self.names.iter().find(|(field, _)| *field == key) {
                Some((_, None)) => false,
                Some((_, Some(name))) => {
                    attribute.key = Key::from_static_str(name);
                    true
                }
                None => true,
            }
        });
        let mut at = 0;
        while at < attributes.len() {
            if attributes[at + 1..]
                .iter()
                .any(|later| later.key == attributes[at].key)
            {
                attributes.remove(at);
            } else {
                at += 1;
            }
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for Attributes<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.next.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        self.tidy(&mut span.attributes);
        self.next.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

/// Which requests are exported: the standard `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
/// `traceidratio`, and each `parentbased_` one; default `parentbased_always_on`) and
/// `OTEL_TRACES_SAMPLER_ARG` (the ratio, 0.0 to 1.0; default 1.0), as the SDK reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampling {
    /// A request with a caller's span follows the caller's sampled flag.
    parent_based: bool,
    /// The share of the other requests exported, by trace id.
    ratio: f64,
}

impl Sampling {
    /// `parentbased_always_on`, the default.
    const DEFAULT: Self = Self {
        parent_based: true,
        ratio: 1.0,
    };

    fn from_env() -> Self {
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
        let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
        Self::parse(sampler.as_deref(), arg.as_deref()).unwrap_or_else(|why| {
            eprintln!("{why}; sampling parentbased_always_on");
            Self::DEFAULT
        })
    }

    fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        let sampler = sampler.map_or("parentbased_always_on", str::trim);
        let (parent_based, root) = match sampler.strip_prefix("parentbased_") {
            Some(root) => (true, root),
            None => (false, sampler),
        };
        let ratio = match root {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match arg.map(|a| a.trim().parse::<f64>()) {
                None => 1.0,
                Some(Ok(ratio)) if (0.0..=1.0).contains(&ratio) => ratio,
                Some(_) => {
                    return Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio from 0 to 1"
                    ));
                }
            },
            _ => return Err(format!("OTEL_TRACES_SAMPLER={sampler:?} is not a sampler")),
        };
        Ok(Self {
            parent_based,
            ratio,
        })
    }

    /// Like the SDK's trace id ratio: the trace id's low 63 bits below `ratio` of their range, so
    /// every process that sees a trace decides alike.
    fn decide(&self, trace: &RequestTrace) -> bool {
        match trace.parent {
            Some(parent) if self.parent_based => parent.sampled,
            _ => {
                let low = (trace.trace_id.as_u128() as u64) >> 1;
                (low as f64) < self.ratio * (1u64 << 63) as f64
            }
        }
    }
}

/// Whether a request in `trace` is exported (false when export is off): decided once, before its span
/// is made, which then declares `otel.kind` (see [`layer`]).
pub fn exports(trace: &RequestTrace) -> bool {
    EXPORTING
        .get()
        .is_some_and(|exporting| exporting.sampling.decide(trace))
}

/// The span field that marks an exported root span's call site (and sets its kind).
const KIND: &str = "otel.kind";

fn declares_kind(line: &tracing::Metadata<'_>) -> bool {
    line.fields().field(KIND).is_some()
}

/// Whether `span` is an exported root span (made at a call site that declares `otel.kind`).
pub fn exported(span: &tracing::Span) -> bool {
    enabled() && span.metadata().is_some_and(declares_kind)
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
    if let Some(exporting) = EXPORTING.get()
        && let Err(error) = exporting.provider.force_flush()
    {
        tracing::warn!(message = "OpenTelemetry spans not exported.", error = %error);
    }
}

/// Export what is left and stop the exporter (at exit).
pub fn shutdown() {
    if let Some(exporting) = EXPORTING.get() {
        let _ = exporting.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_standard_samplers_are_read_as_the_sdk_reads_them_and_others_refused() {
        let read = |s: Option<&str>, a: Option<&str>| Sampling::parse(s, a).unwrap();
        let on = Sampling {
            parent_based: true,
            ratio: 1.0,
        };
        assert_eq!(read(None, None), on);
        assert_eq!(read(Some("parentbased_always_on"), None), on);
        assert_eq!(
            read(Some("always_off"), None),
            Sampling {
                parent_based: false,
                ratio: 0.0
            }
        );
        assert_eq!(
            read(Some("traceidratio"), Some("0.25")),
            Sampling {
                parent_based: false,
                ratio: 0.25
            }
        );
        assert_eq!(
            read(Some("parentbased_traceidratio"), Some(" 0.05 ")),
            Sampling {
                parent_based: true,
                ratio: 0.05
            }
        );
        assert_eq!(read(Some("traceidratio"), None).ratio, 1.0);
        for (sampler, arg) in [
            ("xray", None),
            ("traceidratio", Some("1.5")),
            ("traceidratio", Some("often")),
        ] {
            assert!(
                Sampling::parse(Some(sampler), arg).is_err(),
                "{sampler} {arg:?}"
            );
        }
    }

    #[test]
    fn attributes_are_renamed_or_left_out_by_the_table_and_a_key_set_twice_keeps_its_last_value() {
        let tidy = Attributes {
            names: &[("route", Some("http.route")), ("span_id", None)],
            next: (),
        };
        let attributes = [
            ("request_id", "r-1"),
            ("route", "/messages"),
            ("span_id", "made-before-the-join"),
            ("trace_id", "made-before-the-join"),
            ("trace_id", "the-exported-one"),
            ("span_id", "the-exported-one"),
        ]
        .map(|(k, v)| KeyValue::new(k, v));
        let mut attributes = attributes.to_vec();
        tidy.tidy(&mut attributes);
        let tidied: Vec<(String, String)> = attributes
            .into_iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let expected = [
            ("request_id", "r-1"),
            ("http.route", "/messages"),
            ("trace_id", "the-exported-one"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(tidied, expected);
    }

    #[test]
    fn a_caller_decides_for_parent_based_sampling_and_a_ratio_holds_over_many_traces() {
        const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ratio = Sampling {
            parent_based: true,
            ratio: 0.05,
        };
        let caller = RequestTrace::of(Some(SAMPLED), None);
        assert!(ratio.decide(&caller));
        assert!(!ratio.decide(&RequestTrace::of(
            Some(&SAMPLED.replace("-01", "-00")),
            None
        )));
        let ignoring = Sampling {
            parent_based: false,
            ratio: 0.0,
        };
        assert!(
            !ignoring.decide(&caller),
            "not parent-based: the ratio decides"
        );
        // 20,000 new traces at 0.05: within the 99.9% binomial bound around 1,000 (sd 30.8).
        let exported = (0..20_000)
            .filter(|_| ratio.decide(&RequestTrace::of(None, None)))
            .count();
        assert!((899..=1101).contains(&exported), "{exported}");
        let all = Sampling {
            parent_based: false,
            ratio: 1.0,
        };
        assert!((0..1000).all(|_| all.decide(&RequestTrace::of(None, None))));
    }
}
