//! The request metrics: which route and method a response answered ([`Endpoint`]), and the handles of
//! `relay_http_requests_total` and `relay_http_request_duration_seconds` for every route and method of
//! the router, registered once when it is built ([`RequestMetrics`]), so a request updates two atomics
//! and builds no label. Label values come from bounded sets: the router's route templates, the method
//! labels below, five status classes.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};

use super::names::Metric;

/// The route label of a request that no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The HTTP method as a bounded label value (`OTHER` for anything unusual).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Every value the status class label takes, in order ([`status_slot`] indexes it).
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The position of a status's class in [`STATUS_CLASSES`].
pub fn status_slot(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
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

    /// A response that came without one (none does: every route's response step tags it).
    pub fn unknown() -> Self {
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
