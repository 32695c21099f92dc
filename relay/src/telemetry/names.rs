//! The metric catalog: every metric the relay emits, with its kind, unit, labels and help, in one place.
//! Metric names appear nowhere else in the code; dashboards, alarms and docs are checked against this list.

use metrics::Unit;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One catalog entry, as `relay metrics-catalog` prints it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    #[serde(serialize_with = "unit_name")]
    pub unit: Unit,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Emitted by the server runtime only (a Lambda has no connections of its own): on the Grafana
    /// dashboard, not on CloudWatch's.
    pub server_only: bool,
}

fn unit_name<S: serde::Serializer>(unit: &Unit, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(unit.as_str())
}

/// Declares `Metric` (one variant per line), `Metric::ALL` in this order, and `Metric::spec`.
macro_rules! catalog {
    ($($metric:ident => $name:literal, $kind:ident, $unit:ident, [$($label:literal),*], $help:literal;)*) => {
        /// Every metric the relay emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Metric {
            $($metric,)*
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$metric,)*];

            pub const fn spec(self) -> Spec {
                match self {
                    $(Metric::$metric => Spec {
                        name: $name,
                        kind: Kind::$kind,
                        unit: Unit::$unit,
                        labels: &[$($label),*],
                        help: $help,
                        server_only: matches!(
                            Metric::$metric,
                            Metric::HttpConnectionsOpen | Metric::HttpConnectionsClosedTotal
                        ),
                    },)*
                }
            }

            pub const fn as_str(self) -> &'static str {
                self.spec().name
            }
        }
    };
}

catalog! {
    HttpRequestsTotal => "relay_http_requests_total", Counter, Count, ["route", "method", "status_class"],
        "HTTP requests answered, by route template, method and status class.";
    HttpRequestDurationSeconds => "relay_http_request_duration_seconds", Histogram, Seconds, ["route", "method"],
        "Time from request received to response headers sent.";
    HttpConnectionsOpen => "relay_http_connections_open", Gauge, Count, [],
        "Connections open now (server runtime; at --max-connections, new ones wait).";
    HttpConnectionsClosedTotal => "relay_http_connections_closed_total", Counter, Count, ["reason"],
        "Connections ended, by reason: closed, idle_timeout, header_timeout, head_too_large (431), uri_too_long (414), malformed (400), shutdown, broken (server runtime).";
    StoreOperationDurationSeconds => "relay_store_operation_duration_seconds", Histogram, Seconds, ["backend", "op"],
        "Time taken by each store operation, successful or not.";
    StoreErrorsTotal => "relay_store_errors_total", Counter, Count, ["backend", "op", "error_code"],
        "Store operations that failed because of the store (busy, unavailable, internal).";
    MessagesCreatedTotal => "relay_messages_created_total", Counter, Count, [],
        "Messages written (idempotent replays excluded).";
    MessagesReadTotal => "relay_messages_read_total", Counter, Count, [],
        "Messages returned by id.";
    MessagesUpdatedTotal => "relay_messages_updated_total", Counter, Count, [],
        "Messages replaced by PUT.";
    MessagesDeletedTotal => "relay_messages_deleted_total", Counter, Count, [],
        "Messages deleted by DELETE.";
    MessagesExpiredTotal => "relay_messages_expired_total", Counter, Count, [],
        "Expired messages removed by the sweeper.";
    IdempotentReplaysTotal => "relay_idempotent_replays_total", Counter, Count, [],
        "Creates answered from an earlier request with the same Idempotency-Key.";
    RateLimitedTotal => "relay_rate_limited_total", Counter, Count, ["route"],
        "Requests refused with 429 by the per-client rate limit.";
    CacheHitsTotal => "relay_cache_hits_total", Counter, Count, [],
        "Reads by id answered from the in-process cache.";
    CacheMissesTotal => "relay_cache_misses_total", Counter, Count, [],
        "Reads by id that went to the store.";
    AppTimestampsTotal => "relay_app_timestamps_total", Counter, Count, [],
        "Timestamps appended to the /app log.";
    SavedStringUpdatesTotal => "relay_saved_string_updates_total", Counter, Count, [],
        "Changes of the saved string.";
    AdminAuthFailuresTotal => "relay_admin_auth_failures_total", Counter, Count, ["reason"],
        "Writes to the saved string refused for a missing or wrong admin token.";
    ColdStartsTotal => "relay_cold_starts_total", Counter, Count, [],
        "Lambda sandboxes that served their first request (0 outside Lambda).";
    LogLinesDroppedTotal => "relay_log_lines_dropped_total", Counter, Count, [],
        "Log lines dropped because whoever reads stdout stalled for over 100 ms (server runtime).";
    BuildInfo => "relay_build_info", Gauge, Count, ["version"],
        "Always 1; the labels say which build is running.";
}

/// The whole catalog, in a stable order.
pub fn catalog() -> Vec<Spec> {
    Metric::ALL.iter().map(|m| m.spec()).collect()
}

/// The catalog as a Markdown table (the README's metric list is this output, checked by a test).
pub fn catalog_markdown() -> String {
    let mut out =
        String::from("| metric | kind | unit | labels | meaning |\n|---|---|---|---|---|\n");
    for spec in catalog() {
        let kind = match spec.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let unit = spec.unit.as_str();
        let labels = if spec.labels.is_empty() {
            "-".to_owned()
        } else {
            spec.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {unit} | {labels} | {} |\n",
            spec.name, spec.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_follow_the_convention() {
        let mut seen = HashSet::new();
        for spec in catalog() {
            assert!(seen.insert(spec.name), "duplicate metric {}", spec.name);
            assert!(spec.name.starts_with("relay_"), "{}", spec.name);
            match spec.kind {
                Kind::Counter => assert!(spec.name.ends_with("_total"), "{}", spec.name),
                Kind::Histogram => assert!(spec.name.ends_with("_seconds"), "{}", spec.name),
                Kind::Gauge => assert!(!spec.name.ends_with("_total"), "{}", spec.name),
            }
            for label in spec.labels {
                assert!(
                    !["id", "path", "request_id", "message"].contains(label),
                    "high-cardinality label {label}"
                );
            }
        }
        assert_eq!(seen.len(), Metric::ALL.len());
    }
}
