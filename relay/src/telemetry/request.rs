//! What tower-http's `TraceLayer` is given to observe each request:
//! - [`RequestSpan`] (`make_span_with`): the span named `request`, with `request_id`, `method`, `route`
//!   (the matched template, never the raw path), in Lambda `cold_start`, and `problem` once known. The
//!   JSON layer writes these into every line logged while the request is served; the log filter always
//!   lets this span through (see `telemetry::init_logging`), so they are there at any `RUST_LOG`.
//! - [`ResponseSent`] (`on_response`): emits `HttpResponseSent`, the line that closes the request and
//!   the request metrics.
//! - [`RequestMetrics`]: the handles of those metrics, registered once for every route and method of
//!   the router when it is built, so a request updates two atomics and builds no label.
//! - [`Endpoint`]: which route and method a response answered. The HTTP response step puts it in the
//!   response's extensions: `TraceLayer`'s callbacks share nothing per request but the span.
//!
//! Must never: label a metric with a raw path, or lose the request's fields on a line inside it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};

use super::events::{
    ColdStart, Event, HttpResponseSent, STATUS_CLASSES, method_label, status_slot,
};
use super::names::Metric;

/// The name of the request span, which `RUST_LOG` span directives (`relay[request]=debug`) match.
pub const SPAN_NAME: &str = "request";

/// The route label of a request that no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

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
        if let Some(cold) = super::cold_start() {
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

/// The route template and method label a response answered for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    route: Option<MatchedPath>,
    method: &'static str,
}

impl Endpoint {
    pub fn new(route: Option<MatchedPath>, method: &Method) -> Self {
        Self {
            route,
            method: method_label(method),
        }
    }

    fn unknown() -> Self {
        Self {
            route: None,
            method: "OTHER",
        }
    }

    fn route(&self) -> &str {
        self.route.as_ref().map_or(UNMATCHED_ROUTE, |m| m.as_str())
    }
}

/// The request metrics of one route and method.
struct EndpointHandles {
    /// `relay_http_requests_total`, by status class (indexed like `STATUS_CLASSES`).
    requests: [Counter; STATUS_CLASSES.len()],
    duration: Histogram,
}

impl EndpointHandles {
    fn register(route: &str, method: &'static str) -> Self {
        let requests = STATUS_CLASSES.map(|class| {
            metrics::counter!(Metric::HttpRequestsTotal.as_str(), "route" => route.to_owned(),
                "method" => method, "status_class" => class)
        });
        let duration = metrics::histogram!(Metric::HttpRequestDurationSeconds.as_str(),
            "route" => route.to_owned(), "method" => method);
        Self { requests, duration }
    }
}

/// The request metrics' handles by route template and method.
pub struct RequestMetrics {
    routes: HashMap<String, Vec<(&'static str, EndpointHandles)>>,
}

impl RequestMetrics {
    /// Register the request metrics of every `(route, method)` (at zero, so dashboards show 0 before
    /// the first request). Call once an exporter is installed: handles taken before stay no-ops.
    pub fn register<'a>(endpoints: impl IntoIterator<Item = (&'a str, &'a Method)>) -> Self {
        let mut routes: HashMap<String, Vec<(&'static str, EndpointHandles)>> = HashMap::new();
        for (route, method) in endpoints {
            let method = method_label(method);
            let methods = routes.entry(route.to_owned()).or_default();
            if !methods.iter().any(|(m, _)| *m == method) {
                methods.push((method, EndpointHandles::register(route, method)));
            }
        }
        Self { routes }
    }

    /// Count a response and record its latency. An endpoint not registered (a method a route does not
    /// take, answered 405) is counted through the registry: still bounded by the router.
    pub fn record(&self, endpoint: &Endpoint, status: StatusCode, latency: Duration) {
        let slot = status_slot(status);
        let seconds = latency.as_secs_f64();
        let route = endpoint.route();
        let known = self
            .routes
            .get(route)
            .and_then(|methods| methods.iter().find(|(m, _)| *m == endpoint.method));
        match known {
            Some((_, handles)) => {
                handles.requests[slot].increment(1);
                handles.duration.record(seconds);
            }
            None => {
                let handles = EndpointHandles::register(route, endpoint.method);
                handles.requests[slot].increment(1);
                handles.duration.record(seconds);
            }
        }
    }
}
