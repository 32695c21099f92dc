//! Every thing that happens while serving, as one type that emits its log line and its metric together,
//! so the two can never drift. Raw `metrics::*!` macros and metric names appear only in this file.
//!
//! Must never: log message contents or tokens, or use a label value that is not from a bounded set.

use std::time::Duration;

use axum::http::{Method, StatusCode};

use super::names::Metric;
use crate::store::{Backend, StoreError};

/// An event: emitting it writes its log line and updates its metrics.
pub trait Event {
    fn emit(self);
}

/// Every value the method label takes.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "OTHER",
];

/// The HTTP method as a bounded label value.
pub fn method_label(method: &Method) -> &'static str {
    METHODS[match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        _ => 7,
    }]
}

/// Every value the status class label takes.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The status class as a bounded label value.
pub fn status_class(status: StatusCode) -> &'static str {
    STATUS_CLASSES[status_slot(status)]
}

/// The position of a status's class in `STATUS_CLASSES`.
fn status_slot(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The route label for a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A route label, interned, with the request-metric handles of each method on it.
struct Route {
    label: &'static str,
    endpoints: handles::Endpoints,
}

/// Past this many distinct route templates (a bug upstream), the rest are labelled `other`.
const MAX_ROUTES: usize = 256;

/// The interned route for a route template, so recording a metric allocates no string per request.
/// Route templates come from the router (a fixed set), so interning them leaks a bounded amount; past
/// `MAX_ROUTES` distinct values (which would be a bug upstream) everything else is labelled `other`.
fn route(template: &str) -> &'static Route {
    type Routes = rustc_hash::FxHashMap<&'static str, &'static Route>;
    // Each thread remembers the routes it has served, so a request takes no lock.
    thread_local! {
        static SEEN: std::cell::RefCell<Routes> = std::cell::RefCell::new(Routes::default());
    }
    let seen = SEEN.with(|seen| {
        seen.try_borrow()
            .ok()
            .and_then(|m| m.get(template).copied())
    });
    if let Some(known) = seen {
        return known;
    }
    let known = shared_route(template);
    SEEN.with(|seen| {
        if let Ok(mut m) = seen.try_borrow_mut() {
            if m.len() < MAX_ROUTES {
                m.insert(known.label, known);
            }
        }
    });
    known
}

/// The process-wide interning behind `route`.
fn shared_route(template: &str) -> &'static Route {
    use std::sync::{OnceLock, RwLock};
    type Routes = rustc_hash::FxHashMap<&'static str, &'static Route>;
    static ROUTES: OnceLock<RwLock<Routes>> = OnceLock::new();
    static OTHER: OnceLock<Route> = OnceLock::new();
    let intern = |label: &'static str| -> &'static Route {
        Box::leak(Box::new(Route {
            label,
            endpoints: Default::default(),
        }))
    };
    let other = || {
        OTHER.get_or_init(|| Route {
            label: "other",
            endpoints: Default::default(),
        })
    };
    let routes = ROUTES.get_or_init(|| {
        RwLock::new(Routes::from_iter([(
            UNMATCHED_ROUTE,
            intern(UNMATCHED_ROUTE),
        )]))
    });
    if let Some(known) = routes
        .read()
        .ok()
        .and_then(|set| set.get(template).copied())
    {
        return known;
    }
    let Ok(mut set) = routes.write() else {
        return other();
    };
    if let Some(known) = set.get(template) {
        return known;
    }
    if set.len() >= MAX_ROUTES {
        return other();
    }
    let label: &'static str = Box::leak(template.to_owned().into_boxed_str());
    let interned = intern(label);
    set.insert(label, interned);
    interned
}

/// The label of a route template (`UNMATCHED_ROUTE` when none matched), interned: bounded by the
/// router, never a raw path.
pub fn route_label(template: &str) -> &'static str {
    RouteLabel::of(template).as_str()
}

/// An interned route label with its request-metric handles, found once per request.
#[derive(Clone, Copy)]
pub struct RouteLabel(&'static Route);

impl RouteLabel {
    /// The label of a route template (`UNMATCHED_ROUTE` when none matched).
    pub fn of(template: &str) -> Self {
        Self(route(template))
    }

    pub fn as_str(self) -> &'static str {
        self.0.label
    }
}

impl std::fmt::Debug for RouteLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteLabel").field(&self.0.label).finish()
    }
}

/// A response was sent. `route` is the matched route template (bounded by the router), never a raw path.
pub struct HttpResponseSent {
    pub route: RouteLabel,
    pub method: &'static str,
    pub status: StatusCode,
    pub latency: Duration,
}

/// The target of the lines events write, which `RUST_LOG` directives name.
pub const TARGET: &str = module_path!();

impl Event for HttpResponseSent {
    fn emit(self) {
        const FINISHED: &str = "Request finished.";
        const FAILED: &str = "Request failed.";
        // Metrics first: their atomic updates then do not wait for the line's stores to reach memory.
        handles::record_request(self.route, self.method, self.status, self.latency);
        let latency_ms = millis(self.latency);
        let status = self.status.as_u16();
        let failed = self.status.is_server_error();
        // Where logging installed the direct writer of request lines, it writes (or filters) the line
        // (see `format::RequestLines`); otherwise, or inside a span, the tracing event does.
        let handled = super::request_lines().is_some_and(|lines| {
            lines.write(
                failed,
                if failed { FAILED } else { FINISHED },
                status,
                latency_ms,
            )
        });
        if !handled {
            if failed {
                tracing::error!(message = FAILED, status, latency_ms);
            } else {
                tracing::info!(message = FINISHED, status, latency_ms);
            }
        }
    }
}

/// Store operations, a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    CreateMessage,
    GetMessage,
    UpdateMessage,
    DeleteMessage,
    CountMessages,
    SweepExpired,
    AppendTimestamp,
    ListTimestamps,
    GetSaved,
    PutSaved,
    Ping,
}

impl StoreOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CreateMessage => "create_message",
            Self::GetMessage => "get_message",
            Self::UpdateMessage => "update_message",
            Self::DeleteMessage => "delete_message",
            Self::CountMessages => "count_messages",
            Self::SweepExpired => "sweep_expired",
            Self::AppendTimestamp => "append_timestamp",
            Self::ListTimestamps => "list_timestamps",
            Self::GetSaved => "get_saved",
            Self::PutSaved => "put_saved",
            Self::Ping => "ping",
        }
    }
}

/// A store operation finished, well or badly.
pub struct StoreOperationCompleted<'a> {
    pub backend: Backend,
    pub op: StoreOp,
    pub latency: Duration,
    pub error: Option<&'a StoreError>,
}

impl Event for StoreOperationCompleted<'_> {
    fn emit(self) {
        let backend = self.backend.as_str();
        let op = self.op.as_str();
        let latency_ms = millis(self.latency);
        handles::histogram(Metric::StoreOperationDurationSeconds, [backend, op, ""])
            .record(self.latency.as_secs_f64());
        match self.error {
            None => tracing::debug!(
                message = "Store operation finished.",
                backend,
                op,
                latency_ms,
                outcome = "ok"
            ),
            Some(error) if !error.is_fault() => {
                tracing::debug!(
                    message = "Store operation finished.",
                    backend,
                    op,
                    latency_ms,
                    outcome = error.code()
                );
            }
            Some(error) => {
                tracing::error!(message = "Store operation failed.", backend, op, latency_ms,
                    outcome = "error", error_code = error.code(), error = %error);
                metrics::counter!(Metric::StoreErrorsTotal.as_str(), "backend" => backend, "op" => op,
                    "error_code" => error.code())
                .increment(1);
            }
        }
    }
}

/// A request ended in a 500: the reason, which the client never sees. The request itself is counted
/// by `HttpResponseSent` (status class 5xx); a failing store call by `StoreOperationCompleted`.
pub struct RequestFailedInternally<'a> {
    pub reason: &'a str,
}

impl Event for RequestFailedInternally<'_> {
    fn emit(self) {
        tracing::error!(message = "Internal error.", error = self.reason);
    }
}

/// What happened to a message, for the per-outcome counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEvent {
    Created,
    Read,
    Updated,
    Deleted,
    IdempotentReplay,
}

impl Event for MessageEvent {
    fn emit(self) {
        let (metric, message) = match self {
            Self::Created => (Metric::MessagesCreatedTotal, "Message created."),
            Self::Read => (Metric::MessagesReadTotal, "Message read."),
            Self::Updated => (Metric::MessagesUpdatedTotal, "Message updated."),
            Self::Deleted => (Metric::MessagesDeletedTotal, "Message deleted."),
            Self::IdempotentReplay => (
                Metric::IdempotentReplaysTotal,
                "Create replayed for a repeated Idempotency-Key.",
            ),
        };
        tracing::debug!(message);
        handles::increment(metric);
    }
}

/// The sweeper removed expired messages.
pub struct MessagesExpired {
    pub count: u64,
}

impl Event for MessagesExpired {
    fn emit(self) {
        if self.count > 0 {
            tracing::info!(message = "Expired messages removed.", count = self.count);
        }
        metrics::counter!(Metric::MessagesExpiredTotal.as_str()).increment(self.count);
    }
}

/// A request was refused by the rate limiter.
pub struct RateLimited<'a> {
    pub route: &'a str,
    pub retry_after: Duration,
}

impl Event for RateLimited<'_> {
    fn emit(self) {
        tracing::info!(
            message = "Request rate limited.",
            retry_after_ms = self.retry_after.as_millis() as u64
        );
        metrics::counter!(Metric::RateLimitedTotal.as_str(), "route" => route_label(self.route))
            .increment(1);
    }
}

/// A read by id was answered from the cache, or not.
pub enum CacheLookup {
    Hit,
    Miss,
}

impl Event for CacheLookup {
    fn emit(self) {
        let (metric, outcome) = match self {
            Self::Hit => (Metric::CacheHitsTotal, "hit"),
            Self::Miss => (Metric::CacheMissesTotal, "miss"),
        };
        tracing::trace!(message = "Cache lookup.", outcome);
        handles::increment(metric);
    }
}

/// A timestamp was appended to the `/app` log.
pub struct AppTimestampAppended;

impl Event for AppTimestampAppended {
    fn emit(self) {
        tracing::debug!(message = "Timestamp appended.");
        metrics::counter!(Metric::AppTimestampsTotal.as_str()).increment(1);
    }
}

/// The saved string changed (its value is never logged).
pub struct SavedStringUpdated {
    pub bytes: usize,
}

impl Event for SavedStringUpdated {
    fn emit(self) {
        tracing::info!(message = "Saved string updated.", bytes = self.bytes);
        metrics::counter!(Metric::SavedStringUpdatesTotal.as_str()).increment(1);
    }
}

/// Why a write to the saved string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No admin token is configured, so the saved string is read-only.
    NotConfigured,
    Missing,
    Wrong,
}

impl AuthFailure {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Missing => "missing",
            Self::Wrong => "wrong",
        }
    }
}

impl Event for AuthFailure {
    fn emit(self) {
        tracing::warn!(
            message = "Admin authentication failed.",
            reason = self.as_str()
        );
        metrics::counter!(Metric::AdminAuthFailuresTotal.as_str(), "reason" => self.as_str())
            .increment(1);
    }
}

/// Milliseconds with microsecond precision, for `latency_ms` fields.
pub fn millis(d: Duration) -> f64 {
    // Whole microseconds, rounded, in integers: `f64::round` is a libm call on baseline x86-64.
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((d.subsec_nanos() + 500) / 1000));
    micros as f64 / 1000.0
}

/// A Lambda sandbox served its first request.
pub struct ColdStart;

impl Event for ColdStart {
    fn emit(self) {
        tracing::info!(message = "Cold start.");
        metrics::counter!(Metric::ColdStartsTotal.as_str()).increment(1);
    }
}

/// The relay started (the build-info gauge is set when the exporter is installed).
pub struct RelayStarted<'a> {
    pub listen: &'a str,
    pub store: &'a str,
}

impl Event for RelayStarted<'_> {
    fn emit(self) {
        tracing::info!(
            message = "Relay started.",
            listen = self.listen,
            store = self.store
        );
    }
}

/// Metric handles for the per-request events, looked up once per label set instead of building a key
/// on every request. Label values are `&'static str` from bounded sets, so the cache is bounded too.
/// Handles are cached only once an exporter is installed: a handle taken before would stay a no-op.
mod handles {
    use std::sync::{OnceLock, RwLock};

    use metrics::{Counter, Histogram, Label};

    use super::Metric;

    /// Handles are looked up on every request, so the key is the address and length of each static
    /// string (metric name and label values) rather than its text: hashing and comparing it costs a few
    /// integer operations. Label values come from small fixed sets (routes are interned by
    /// `route_label`); two equal strings at different addresses would only get two cache entries for the
    /// same registered metric, which is harmless.
    type Key = [(usize, usize); 4];
    type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

    fn key(metric: Metric, values: [&'static str; 3]) -> Key {
        let at = |s: &'static str| (s.as_ptr() as usize, s.len());
        [
            at(metric.as_str()),
            at(values[0]),
            at(values[1]),
            at(values[2]),
        ]
    }

    fn labels(metric: Metric, values: [&'static str; 3]) -> Vec<Label> {
        metric
            .spec()
            .labels
            .iter()
            .zip(values)
            .map(|(key, value)| Label::new(*key, value))
            .collect()
    }

    fn cached<T: Clone>(
        cache: &'static OnceLock<RwLock<HashMap<Key, T>>>,
        key: Key,
        make: impl FnOnce() -> T,
    ) -> T {
        if !crate::telemetry::exporter_installed() {
            return make();
        }
        let map = cache.get_or_init(Default::default);
        if let Some(handle) = map.read().ok().and_then(|m| m.get(&key).cloned()) {
            return handle;
        }
        let handle = make();
        if let Ok(mut m) = map.write() {
            m.insert(key, handle.clone());
        }
        handle
    }

    pub fn counter(metric: Metric, values: [&'static str; 3]) -> Counter {
        static CACHE: OnceLock<RwLock<HashMap<Key, Counter>>> = OnceLock::new();
        cached(&CACHE, key(metric, values), || {
            metrics::counter!(metric.as_str(), labels(metric, values))
        })
    }

    pub fn histogram(metric: Metric, values: [&'static str; 3]) -> Histogram {
        static CACHE: OnceLock<RwLock<HashMap<Key, Histogram>>> = OnceLock::new();
        cached(&CACHE, key(metric, values), || {
            metrics::histogram!(metric.as_str(), labels(metric, values))
        })
    }

    /// Add one to an unlabelled counter, whose handle is taken once.
    pub fn increment(metric: Metric) {
        static UNLABELLED: [OnceLock<Counter>; Metric::ALL.len()] =
            [const { OnceLock::new() }; Metric::ALL.len()];
        match UNLABELLED.get(metric as usize) {
            Some(slot) if crate::telemetry::exporter_installed() => slot
                .get_or_init(|| metrics::counter!(metric.as_str()))
                .increment(1),
            _ => metrics::counter!(metric.as_str()).increment(1),
        }
    }

    /// The request metrics of one route and method, resolved on its first request: later requests
    /// find them with one lookup of the route and update them without building labels.
    pub struct Endpoint {
        /// `relay_http_requests_total` by status class, each taken on first use (so a route shows no
        /// `5xx` series until it has failed).
        requests: [OnceLock<Counter>; super::STATUS_CLASSES.len()],
        duration: Histogram,
    }

    /// One slot per method label.
    pub type Endpoints = [OnceLock<Endpoint>; super::METHODS.len()];

    /// Count a finished request and record its duration.
    pub fn record_request(
        route: super::RouteLabel,
        method: &'static str,
        status: axum::http::StatusCode,
        latency: std::time::Duration,
    ) {
        let class_slot = super::status_slot(status);
        let class = super::STATUS_CLASSES[class_slot];
        let route = route.0;
        let label = route.label;
        let requests = || counter(Metric::HttpRequestsTotal, [label, method, class]);
        let duration = || histogram(Metric::HttpRequestDurationSeconds, [label, method, ""]);
        let method_slot = super::METHODS.iter().position(|m| *m == method);
        match method_slot {
            // Handles are kept only once an exporter is installed (see `cached`).
            Some(slot) if crate::telemetry::exporter_installed() => {
                let endpoint = route.endpoints[slot].get_or_init(|| Endpoint {
                    requests: Default::default(),
                    duration: duration(),
                });
                endpoint.requests[class_slot]
                    .get_or_init(requests)
                    .increment(1);
                endpoint.duration.record(latency.as_secs_f64());
            }
            _ => {
                requests().increment(1);
                duration().record(latency.as_secs_f64());
            }
        }
    }
}
