//! What tower-http's `TraceLayer` is given to observe each request:
//! - [`RequestSpan`] (`make_span_with`): the span named `request`, with `request_id`, `method`, `route`
//!   (the matched template, never the raw path), in Lambda `cold_start`, and `problem` once known. The
//!   JSON layer writes these into every line logged while the request is served; the log filter always
//!   lets this span through (see `telemetry::init_logging`), so they are there at any `RUST_LOG`.
//! - [`ResponseSent`] (`on_response`): emits `HttpResponseSent`, the line that closes the request and
//!   the request metrics.
//!
//! The request metrics' labels come from [`Endpoint`](super::endpoint::Endpoint), which the HTTP response
//! step puts in the response's extensions: `TraceLayer`'s callbacks share nothing per request but the
//! span.
//!
//! Must never: label a metric with a raw path, or lose the request's fields on a line inside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};

use super::endpoint::{Endpoint, RequestMetrics, UNMATCHED_ROUTE, method_label};
use super::events::{ColdStart, Event, HttpResponseSent};

/// The name of the request span, which `RUST_LOG` span directives (`relay[request]=debug`) match.
pub const SPAN_NAME: &str = "request";

/// The request id header, set on every request before anything else sees it.
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The `TraceLayer` every route is wrapped in when telemetry is on.
pub type RequestTraceLayer =
    TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan, (), ResponseSent, (), (), ()>;

/// The trace layer: the request span around everything inside, `HttpResponseSent` when the response is
/// ready, nothing on request, body chunks or failures (the response event covers them).
pub fn trace_layer(metrics: Arc<RequestMetrics>) -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(ResponseSent { metrics })
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
        let span = tracing::info_span!(
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

/// Emits [`HttpResponseSent`] for every response (see the module docs).
#[derive(Clone)]
pub struct ResponseSent {
    metrics: Arc<RequestMetrics>,
}

impl<B> OnResponse<B> for ResponseSent {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &tracing::Span) {
        let unknown = Endpoint::unknown();
        let endpoint = response.extensions().get::<Endpoint>().unwrap_or(&unknown);
        HttpResponseSent {
            metrics: &self.metrics,
            endpoint,
            status: response.status(),
            latency,
        }
        .emit();
    }
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
