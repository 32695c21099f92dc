//! Every thing that happens while serving, as one type that emits its log line and its metric together,
//! so the two can never drift. Raw `metrics::*!` macros appear only in telemetry; metric names only in
//! `names.rs`. Each event is a tracing event: any layer (JSON lines, pretty, a test capture) sees it.
//!
//! Must never: log message contents or tokens, or use a label value that is not from a bounded set.

use std::time::Duration;

use axum::http::StatusCode;
use telemetry_core::millis;

use super::handles::{self, Endpoint};
use super::names::Metric;
use crate::store::{Backend, StoreError, StoreOp};

/// An event: emitting it writes its log line and updates its metrics.
pub trait Event {
    fn emit(self);
}

/// A response was sent: the line that closes a request (`Request finished.`, or `Request failed.` at
/// `ERROR` for a 5xx) and the request metrics. The line's parent is the request span (made by the
/// HTTP response step), so it carries the request's fields.
pub struct HttpResponseSent<'a> {
    pub span: &'a tracing::Span,
    pub endpoint: &'a Endpoint,
    pub status: StatusCode,
    pub latency: Duration,
    /// Write the request's debug buffer before this line (`request::flush`; telemetry-core's docs).
    pub flush_buffer: bool,
}

impl Event for HttpResponseSent<'_> {
    fn emit(self) {
        self.endpoint.record(self.status, self.latency);
        let status = self.status.as_u16();
        let latency_ms = millis(self.latency);
        let flush_buffer = self.flush_buffer.then_some(true);
        if self.status.is_server_error() {
            tracing::error!(parent: self.span, message = "Request failed.", status, latency_ms, flush_buffer);
        } else {
            tracing::info!(parent: self.span, message = "Request finished.", status, latency_ms, flush_buffer);
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
        handles::record_store_duration(self.backend, self.op, self.latency);
        match self.error.filter(|error| error.is_fault()) {
            // Not a fault: the request's own outcome (`not_found`, `precondition_failed`) or `ok`.
            None => tracing::debug!(
                message = "Store operation finished.",
                backend,
                op,
                latency_ms,
                outcome = self.error.map_or("ok", StoreError::code)
            ),
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

/// What happened to a message, for the per-outcome counters. No log line: the request line already
/// says it (route, method, status), and a debug line repeating it would be kept in the debug buffer
/// of every successful request. A replay is the exception: only a response header says so.
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
        let metric = match self {
            Self::Created => Metric::MessagesCreatedTotal,
            Self::Read => Metric::MessagesReadTotal,
            Self::Updated => Metric::MessagesUpdatedTotal,
            Self::Deleted => Metric::MessagesDeletedTotal,
            Self::IdempotentReplay => {
                tracing::debug!(message = "Create replayed for a repeated Idempotency-Key.");
                Metric::IdempotentReplaysTotal
            }
        };
        handles::increment(metric, 1);
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
        handles::increment(Metric::MessagesExpiredTotal, self.count);
    }
}

/// A request was refused by the rate limiter. `route` is the matched route template (bounded by the
/// router), never a raw path.
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
        metrics::counter!(Metric::RateLimitedTotal.as_str(), "route" => self.route.to_owned())
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
        handles::increment(metric, 1);
    }
}

/// A timestamp was appended to the `/app` log (a counter only, like [`MessageEvent`]).
pub struct AppTimestampAppended;

impl Event for AppTimestampAppended {
    fn emit(self) {
        handles::increment(Metric::AppTimestampsTotal, 1);
    }
}

/// The saved string changed (its value is never logged).
pub struct SavedStringUpdated {
    pub bytes: usize,
}

impl Event for SavedStringUpdated {
    fn emit(self) {
        tracing::info!(message = "Saved string updated.", bytes = self.bytes);
        handles::increment(Metric::SavedStringUpdatesTotal, 1);
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
    pub const ALL: [AuthFailure; 3] = [Self::NotConfigured, Self::Missing, Self::Wrong];

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

/// Log lines were dropped while stdout's reader stalled (see `telemetry_core::paced`); emitted once the
/// reader is back, so this line itself is written.
pub struct LogLinesDropped {
    pub count: u64,
}

impl Event for LogLinesDropped {
    fn emit(self) {
        tracing::warn!(
            message = "Log lines dropped: whoever reads stdout stalled.",
            dropped = self.count
        );
        handles::increment(Metric::LogLinesDroppedTotal, self.count);
    }
}

/// Why a connection ended, a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, or keep-alive ended normally.
    Closed,
    /// No request and no traffic for the idle timeout.
    IdleTimeout,
    /// A request head began but was not complete within the header-read timeout.
    HeaderTimeout,
    /// hyper answered 431: the request head was over the limit.
    HeadTooLarge,
    /// hyper answered 414.
    UriTooLong,
    /// hyper answered 400: the request line or a header could not be parsed.
    Malformed,
    /// Closed by a shutdown while no request was in flight.
    Shutdown,
    /// The connection failed mid-message (reset, broken pipe, body cut short).
    Broken,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        Self::Closed,
        Self::IdleTimeout,
        Self::HeaderTimeout,
        Self::HeadTooLarge,
        Self::UriTooLong,
        Self::Malformed,
        Self::Shutdown,
        Self::Broken,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::IdleTimeout => "idle_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::HeadTooLarge => "head_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::Malformed => "malformed",
            Self::Shutdown => "shutdown",
            Self::Broken => "broken",
        }
    }

    /// The status hyper answered with by itself, before the request reached the router.
    pub const fn refused_with(self) -> Option<u16> {
        match self {
            Self::HeadTooLarge => Some(431),
            Self::UriTooLong => Some(414),
            Self::Malformed => Some(400),
            _ => None,
        }
    }
}

/// A connection was accepted.
pub struct ConnectionOpened;

impl Event for ConnectionOpened {
    fn emit(self) {
        metrics::gauge!(Metric::HttpConnectionsOpen.as_str()).increment(1.0);
    }
}

/// A connection ended (each accepted connection emits this once). Requests hyper refused by itself
/// get an `info` line, as they get no request line; a head timeout too (a slow or hostile client).
pub struct ConnectionClosed {
    pub reason: CloseReason,
}

impl Event for ConnectionClosed {
    fn emit(self) {
        let reason = self.reason.as_str();
        if let Some(status) = self.reason.refused_with() {
            tracing::info!(message = "Request refused before routing.", reason, status);
        } else if self.reason == CloseReason::HeaderTimeout {
            tracing::info!(message = "Connection closed: request head not received in time.");
        } else {
            tracing::debug!(message = "Connection closed.", reason);
        }
        metrics::gauge!(Metric::HttpConnectionsOpen.as_str()).decrement(1.0);
        metrics::counter!(Metric::HttpConnectionsClosedTotal.as_str(), "reason" => reason)
            .increment(1);
    }
}

/// Every connection slot is taken: accepting pauses until a connection closes (new ones wait in the
/// kernel's queue). Emitted once each time the cap is reached.
pub struct ConnectionLimitReached {
    pub limit: usize,
}

impl Event for ConnectionLimitReached {
    fn emit(self) {
        tracing::warn!(
            message = "Connection limit reached: new connections wait until one closes.",
            limit = self.limit as u64
        );
    }
}

/// Accepting a connection failed (out of descriptors or memory, for a moment).
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl Event for AcceptFailed<'_> {
    fn emit(self) {
        tracing::warn!(message = "Accepting a connection failed.", error = %self.error);
    }
}

/// A Lambda sandbox served its first request.
pub struct ColdStart;

impl Event for ColdStart {
    fn emit(self) {
        tracing::info!(message = "Cold start.");
        handles::increment(Metric::ColdStartsTotal, 1);
    }
}

/// The relay started (the build-info gauge is set when the exporter is installed).
pub struct RelayStarted<'a> {
    pub listen: &'a str,
    pub store: &'a str,
    /// The connection cap (server runtime).
    pub max_connections: Option<usize>,
}

impl Event for RelayStarted<'_> {
    fn emit(self) {
        tracing::info!(
            message = "Relay started.",
            listen = self.listen,
            store = self.store,
            max_connections = self.max_connections.map(|n| n as u64)
        );
    }
}

/// Every series of the labelled counters of rare events (store faults, rate limits, refused admin
/// writes) at 0, for every label value they can take on this relay (its routes, its store's backend);
/// called when the metric handles are registered, for Prometheus only. A series that first appears at
/// 1 shows no increase in `rate()` (the first fault would be invisible), and a dashboard shows "No
/// data" instead of 0. EMF writes only counters that moved, so Lambda registers none of them.
pub fn register_rare_event_counters<'a>(routes: impl Iterator<Item = &'a str>, backend: Backend) {
    for op in StoreOp::ALL {
        for code in StoreError::FAULT_CODES {
            metrics::counter!(Metric::StoreErrorsTotal.as_str(), "backend" => backend.as_str(),
                "op" => op.as_str(), "error_code" => code)
            .increment(0);
        }
    }
    for route in routes {
        metrics::counter!(Metric::RateLimitedTotal.as_str(), "route" => route.to_owned())
            .increment(0);
    }
    for reason in AuthFailure::ALL {
        metrics::counter!(Metric::AdminAuthFailuresTotal.as_str(), "reason" => reason.as_str())
            .increment(0);
    }
    for reason in CloseReason::ALL {
        metrics::counter!(Metric::HttpConnectionsClosedTotal.as_str(), "reason" => reason.as_str())
            .increment(0);
    }
}
