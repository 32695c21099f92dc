//! Metric handles, registered once when the router is built ([`register`]) and kept for the life of the
//! process, like the recorder they belong to: the request metrics of every route and method the router
//! serves, the duration of every store operation on the backend it serves from, and each unlabelled
//! counter. Events update them without building a label or looking one up in the recorder's registry.
//! A label set outside them (a method a route does not take, answered 405; another backend's store)
//! goes through the registry, still from a bounded set: route templates, the method labels below, five
//! status classes, the backends.
//!
//! Handles exist only once an exporter is installed (a handle taken before would stay a no-op), so
//! `register` runs after it, and before that (or with telemetry off) events use the registry.
//!
//! The labelled counters of rare events are registered at 0 beside these, by
//! [`super::events::register_rare_event_counters`].

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};

use super::names::{Kind, Metric};
use crate::store::{Backend, StoreOp};

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

/// The request metrics of the route and method a request was routed to, found once when it arrives.
#[derive(Debug)]
pub enum Endpoint {
    /// One the router serves, registered by [`register`].
    Registered(&'static EndpointHandles),
    /// Any other (a method the route does not take, before `register`): counted through the registry.
    Unregistered { route: String, method: &'static str },
}

impl Endpoint {
    /// The endpoint of `route` (the matched template, [`UNMATCHED_ROUTE`] when none) and `method`.
    pub fn of(route: &str, method: &Method) -> Self {
        let method = method_label(method);
        let registered = HANDLES.get().and_then(|handles| {
            let methods = handles.endpoints.get(route)?;
            methods.iter().find(|(m, _)| *m == method).map(|(_, h)| h)
        });
        match registered {
            Some(handles) => Self::Registered(handles),
            None => Self::Unregistered {
                route: route.to_owned(),
                method,
            },
        }
    }

    /// Count a response and record its latency.
    pub fn record(&self, status: StatusCode, latency: Duration) {
        let unregistered;
        let handles = match self {
            Self::Registered(handles) => handles,
            Self::Unregistered { route, method } => {
                unregistered = EndpointHandles::register(route, method);
                &unregistered
            }
        };
        handles.requests[status_slot(status)].increment(1);
        handles.duration.record(latency.as_secs_f64());
    }
}

/// The request metrics of one route and method.
#[derive(Debug)]
pub struct EndpointHandles {
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

/// Every handle (see the module docs).
struct Handles {
    /// A B-tree, not a hash map: a handful of short route strings compare faster than they hash.
    endpoints: BTreeMap<String, Vec<(&'static str, EndpointHandles)>>,
    /// By `Metric as usize`; a no-op for metrics that are not unlabelled counters.
    counters: Vec<Counter>,
    /// The backend the relay serves from, and its operations' durations by `StoreOp as usize`.
    backend: Backend,
    store_durations: Vec<Histogram>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Register every handle, the request metrics for each `(route, method)` and the store operations of
/// `backend`, all at zero so dashboards show 0 before the first request. The first call wins: the
/// routes are the same in every build, and a process serves from one store.
pub fn register<'a>(endpoints: impl IntoIterator<Item = (&'a str, &'a Method)>, backend: Backend) {
    HANDLES.get_or_init(|| {
        let mut routes: BTreeMap<String, Vec<(&'static str, EndpointHandles)>> = BTreeMap::new();
        for (route, method) in endpoints {
            let method = method_label(method);
            let methods = routes.entry(route.to_owned()).or_default();
            if !methods.iter().any(|(m, _)| *m == method) {
                methods.push((method, EndpointHandles::register(route, method)));
            }
        }
        let counters = Metric::ALL
            .iter()
            .map(|metric| {
                let spec = metric.spec();
                if spec.kind == Kind::Counter && spec.labels.is_empty() {
                    metrics::counter!(spec.name)
                } else {
                    Counter::noop()
                }
            })
            .collect();
        let store_durations = StoreOp::ALL
            .iter()
            .map(|op| store_duration(backend, *op))
            .collect();
        Handles {
            endpoints: routes,
            counters,
            backend,
            store_durations,
        }
    });
}

/// Add `by` to an unlabelled counter.
pub fn increment(metric: Metric, by: u64) {
    match HANDLES.get() {
        Some(handles) => handles.counters[metric as usize].increment(by),
        None => metrics::counter!(metric.as_str()).increment(by),
    }
}

/// Record how long a store operation took.
pub fn record_store_duration(backend: Backend, op: StoreOp, latency: Duration) {
    let seconds = latency.as_secs_f64();
    match HANDLES.get().filter(|handles| handles.backend == backend) {
        Some(handles) => handles.store_durations[op as usize].record(seconds),
        None => store_duration(backend, op).record(seconds),
    }
}

fn store_duration(backend: Backend, op: StoreOp) -> Histogram {
    metrics::histogram!(Metric::StoreOperationDurationSeconds.as_str(),
        "backend" => backend.as_str(), "op" => op.as_str())
}
