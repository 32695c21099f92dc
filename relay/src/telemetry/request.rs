//! What tower-http's `TraceLayer` is given to observe each request:
//! - [`RequestSpan`] (`make_span_with`): the span named `request`, with `request_id`, `method`, `route`
//!   (the matched template, never the raw path), in Lambda `cold_start`, and `problem` once known. The
//!   JSON layer writes these into every line logged while the request is served. The span's level is
//!   ERROR so that any filter that lets a request's errors or warnings through keeps the span too (a
//!   span the filter drops takes its fields with it): the fields are there at every `RUST_LOG` level.
//!
//! The line that closes the request and the request metrics (`HttpResponseSent`) are emitted by the
//! HTTP response step, inside this span: `TraceLayer`'s callbacks share nothing per request but the
//! span, so its `on_response` could not know which route and method it answered.
//!
//! Must never: label a metric with a raw path, or lose the request's fields on a line inside it.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::MatchedPath;
use axum::http::Request;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};

use super::events::{ColdStart, Event};
use super::handles::{UNMATCHED_ROUTE, method_label};

/// The name of the request span, which `RUST_LOG` span directives (`relay[request]=debug`) match.
pub const SPAN_NAME: &str = "request";

/// The request id header, set on every request before anything else sees it.
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The `TraceLayer` every route is wrapped in when telemetry is on.
pub type RequestTraceLayer =
    TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), (), (), (), ()>;

/// The trace layer: the request span, entered around everything inside at every poll; no event of its
/// own (the response step's `HttpResponseSent` covers responses and failures alike).
pub fn trace_layer() -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Makes the request span (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED_ROUTE, |m| m.as_str());
        // A root span: a request is never inside another one, so no lookup of the current span.
        let span = tracing::error_span!(
            parent: None,
            SPAN_NAME,
            request_id,
            method = method_label(request.method()),
            route,
            cold_start = tracing::field::Empty,
            problem = tracing::field::Empty,
        );
        if let Some(cold) = cold_start() {
            span.record("cold_start", cold);
            if cold {
                span.in_scope(|| ColdStart.emit());
            }
        }
        span
    }
}

/// Record the kind of problem the current request ends with, as its span's `problem` field.
pub fn record_problem(code: &'static str) {
    tracing::Span::current().record("problem", code);
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
