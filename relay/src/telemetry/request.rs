//! The request span: named `request`, with `request_id`, `method`, `route` (the matched template, never
//! the raw path), `trace_id` and `span_id` (W3C trace context, [`trace_of`]), `xray_trace_id` when
//! an X-Ray root came with the request, in Lambda `cold_start`, and `problem` once known. With
//! OpenTelemetry on, it is exported as a server span `METHOD ROUTE` with `http.request.method`,
//! `http.route` and `http.response.status_code` ([`finished`]), and the ids on its lines are the
//! exported span's. The HTTP response step makes it
//! when a request arrives ([`span`]) and enters it at every poll of the request's future, so every line
//! logged while the request is served carries these fields (the JSON layer writes them into each
//! line), the line that closes the request (`HttpResponseSent`) included.
//!
//! With `--debug-sample-rate`, a share of requests is sampled when its span is made: `sampled: true`
//! lets the JSON layer write the request's debug lines, whatever `RUST_LOG` says.
//!
//! With `--log-buffer`, the lines of a request that the output filter would not write are kept in its
//! span, and its request line writes them first ([`flush`]) if it failed or was slow.
//!
//! The span's level is ERROR so that any filter that lets a request's errors or warnings through keeps
//! the span too (a span the filter drops takes its fields with it): the fields are there at every
//! `RUST_LOG` level.
//!
//! Must never: label a metric with a raw path, or lose the request's fields on a line inside it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use telemetry_core::otel;
use telemetry_core::trace::RequestTrace;

use super::events::{ColdStart, Event};
use super::handles::method_label;

/// The name of the request span, which `RUST_LOG` span directives (`relay[request]=debug`) match.
pub const SPAN_NAME: &str = "request";

/// The trace context of a request with these headers: `traceparent`, else the X-Ray root of
/// `X-Amzn-Trace-Id` (in Lambda, of `_X_AMZN_TRACE_ID` when the header is missing), else a new trace.
pub fn trace_of(headers: &HeaderMap) -> RequestTrace {
    // Header names made once: looking one up by `&str` parses it first, on every request.
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const XRAY: HeaderName = HeaderName::from_static("x-amzn-trace-id");
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let lambda_trace = || {
        ON_LAMBDA
            .load(Ordering::Relaxed)
            .then(|| std::env::var("_X_AMZN_TRACE_ID").ok())
            .flatten()
    };
    match text(&XRAY) {
        Some(xray) => RequestTrace::of(text(&TRACEPARENT), Some(xray)),
        None => RequestTrace::of(text(&TRACEPARENT), lambda_trace().as_deref()),
    }
}

/// The span of a request with this id, to `route` (the matched template) by `method`, in `trace`.
pub fn span(request_id: &str, method: &Method, route: &str, trace: &RequestTrace) -> tracing::Span {
    // A root span: a request is never inside another one, so no lookup of the current span. Exported
    // or not is decided first: only an exported request's call site declares `otel.kind`, the
    // OpenTelemetry layer sees no other (telemetry-core's `otel::layer`).
    macro_rules! request_span {
        ($trace_id:expr, $span_id:expr; $($otel:tt)*) => {
            tracing::error_span!(
                parent: None,
                SPAN_NAME,
                request_id,
                method = method_label(method),
                route,
                sampled = sampled().then_some(true),
                cold_start = tracing::field::Empty,
                problem = tracing::field::Empty,
                trace_id = $trace_id,
                span_id = $span_id,
                xray_trace_id = trace.xray_root.as_deref(),
                $($otel)*
            )
        };
    }
    let span = if otel::exports(trace) {
        // A server span `METHOD ROUTE`, a child of the caller's; its ids are the ones on the lines.
        // Its fields are its attributes, under their semantic-convention names (`super::ATTRIBUTE_NAMES`);
        // its ids are known once it is made.
        let name = format_args!("{} {route}", method_label(method));
        let empty = tracing::field::Empty;
        let span = request_span!(empty, empty; "otel.kind" = "server", "otel.name" = %name);
        let (trace_id, span_id) = otel::join(&span, trace);
        span.record("trace_id", trace_id.hex().as_str());
        span.record("span_id", span_id.hex().as_str());
        span
    } else {
        request_span!(trace.trace_id.hex().as_str(), trace.span_id.hex().as_str();)
    };
    if let Some(cold) = cold_start() {
        span.record("cold_start", cold);
        if cold {
            span.in_scope(|| ColdStart.emit());
        }
    }
    span
}

/// Record how a request ended on its exported span: its status, and a 5xx as an error.
pub fn finished(span: &tracing::Span, status: StatusCode) {
    if otel::exported(span) {
        otel::attribute(
            span,
            "http.response.status_code",
            i64::from(status.as_u16()),
        );
        if status.is_server_error() {
            otel::failed(span, "server error");
        }
    }
}

/// Record the kind of problem the current request ends with, as its span's `problem` field.
pub fn record_problem(code: &'static str) {
    tracing::Span::current().record("problem", code);
}

/// The debug sample rate as `f64` bits (0.0 samples nothing), set by the log set-up.
static SAMPLE_RATE: AtomicU64 = AtomicU64::new(0);

/// Sample `rate` (0.0 to 1.0) of the requests from now on, for their debug lines.
pub fn sample_debug(rate: f64) {
    SAMPLE_RATE.store(rate.to_bits(), Ordering::Relaxed);
}

/// Whether this request is sampled, decided once, when its span is made.
fn sampled() -> bool {
    let rate = f64::from_bits(SAMPLE_RATE.load(Ordering::Relaxed));
    rate > 0.0 && fastrand::f64() < rate
}

/// With the debug buffer on: requests slower than this write their buffer (unset: the buffer is off).
static FLUSH_SLOWER_THAN: OnceLock<Duration> = OnceLock::new();

/// Turn the debug buffer's flush on: failed requests and those slower than `slow` write their buffer.
pub fn flush_slower_than(slow: Duration) {
    let _ = FLUSH_SLOWER_THAN.set(slow);
}

/// Whether a request that ended with `status` after `latency` writes its debug buffer: with the
/// buffer on, when it failed (5xx: errors, panics and timeouts all end as one) or was slow.
pub fn flush(status: StatusCode, latency: Duration) -> bool {
    FLUSH_SLOWER_THAN
        .get()
        .is_some_and(|slow| status.is_server_error() || latency > *slow)
}

static ON_LAMBDA: AtomicBool = AtomicBool::new(false);
static COLD: AtomicBool = AtomicBool::new(true);

/// Mark the process as a Lambda function, so requests report `cold_start`.
pub fn mark_lambda() {
    ON_LAMBDA.store(true, Ordering::Relaxed);
}

/// In Lambda: `Some(true)` for the first request of this sandbox, then `Some(false)`. Elsewhere `None`.
fn cold_start() -> Option<bool> {
    ON_LAMBDA
        .load(Ordering::Relaxed)
        .then(|| COLD.swap(false, Ordering::Relaxed))
}
