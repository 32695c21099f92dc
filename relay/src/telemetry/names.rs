//! The metric catalog: every metric the relay emits, with its kind, unit, labels and help, in one place.
//! Metric names appear nowhere else in the code; dashboards, alarms and docs are checked against this list.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Count,
    Seconds,
    Bytes,
}

/// Every metric the relay emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    HttpRequestsTotal,
    HttpRequestDurationSeconds,
    StoreOperationDurationSeconds,
    StoreErrorsTotal,
    MessagesCreatedTotal,
    MessagesReadTotal,
    MessagesUpdatedTotal,
    MessagesDeletedTotal,
    MessagesExpiredTotal,
    IdempotentReplaysTotal,
    RateLimitedTotal,
    CacheHitsTotal,
    CacheMissesTotal,
    AppTimestampsTotal,
    SavedStringUpdatesTotal,
    AdminAuthFailuresTotal,
    ColdStartsTotal,
    BuildInfo,
}

/// One catalog entry, as `relay metrics-catalog` prints it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

impl Metric {
    pub const ALL: &'static [Metric] = &[
        Metric::HttpRequestsTotal,
        Metric::HttpRequestDurationSeconds,
        Metric::StoreOperationDurationSeconds,
        Metric::StoreErrorsTotal,
        Metric::MessagesCreatedTotal,
        Metric::MessagesReadTotal,
        Metric::MessagesUpdatedTotal,
        Metric::MessagesDeletedTotal,
        Metric::MessagesExpiredTotal,
        Metric::IdempotentReplaysTotal,
        Metric::RateLimitedTotal,
        Metric::CacheHitsTotal,
        Metric::CacheMissesTotal,
        Metric::AppTimestampsTotal,
        Metric::SavedStringUpdatesTotal,
        Metric::AdminAuthFailuresTotal,
        Metric::ColdStartsTotal,
        Metric::BuildInfo,
    ];

    pub const fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub const fn spec(self) -> Spec {
        use Kind::*;
        use Unit::*;
        let (name, kind, unit, labels, help): (_, _, _, &'static [&'static str], _) = match self {
            Metric::HttpRequestsTotal => (
                "relay_http_requests_total",
                Counter,
                Count,
                &["route", "method", "status_class"],
                "HTTP requests answered, by route template, method and status class.",
            ),
            Metric::HttpRequestDurationSeconds => (
                "relay_http_request_duration_seconds",
                Histogram,
                Seconds,
                &["route", "method"],
                "Time from request received to response headers sent.",
            ),
            Metric::StoreOperationDurationSeconds => (
                "relay_store_operation_duration_seconds",
                Histogram,
                Seconds,
                &["backend", "op"],
                "Time taken by each store operation, successful or not.",
            ),
            Metric::StoreErrorsTotal => (
                "relay_store_errors_total",
                Counter,
                Count,
                &["backend", "op", "error_code"],
                "Store operations that failed because of the store (busy, unavailable, internal).",
            ),
            Metric::MessagesCreatedTotal => (
                "relay_messages_created_total",
                Counter,
                Count,
                &[],
                "Messages written (idempotent replays excluded).",
            ),
            Metric::MessagesReadTotal => (
                "relay_messages_read_total",
                Counter,
                Count,
                &[],
                "Messages returned by id.",
            ),
            Metric::MessagesUpdatedTotal => (
                "relay_messages_updated_total",
                Counter,
                Count,
                &[],
                "Messages replaced by PUT.",
            ),
            Metric::MessagesDeletedTotal => (
                "relay_messages_deleted_total",
                Counter,
                Count,
                &[],
                "Messages deleted by DELETE.",
            ),
            Metric::MessagesExpiredTotal => (
                "relay_messages_expired_total",
                Counter,
                Count,
                &[],
                "Expired messages removed by the sweeper.",
            ),
            Metric::IdempotentReplaysTotal => (
                "relay_idempotent_replays_total",
                Counter,
                Count,
                &[],
                "Creates answered from an earlier request with the same Idempotency-Key.",
            ),
            Metric::RateLimitedTotal => (
                "relay_rate_limited_total",
                Counter,
                Count,
                &["route"],
                "Requests refused with 429 by the per-client rate limit.",
            ),
            Metric::CacheHitsTotal => (
                "relay_cache_hits_total",
                Counter,
                Count,
                &[],
                "Reads by id answered from the in-process cache.",
            ),
            Metric::CacheMissesTotal => (
                "relay_cache_misses_total",
                Counter,
                Count,
                &[],
                "Reads by id that went to the store.",
            ),
            Metric::AppTimestampsTotal => (
                "relay_app_timestamps_total",
                Counter,
                Count,
                &[],
                "Timestamps appended to the /app log.",
            ),
            Metric::SavedStringUpdatesTotal => (
                "relay_saved_string_updates_total",
                Counter,
                Count,
                &[],
                "Changes of the saved string.",
            ),
            Metric::AdminAuthFailuresTotal => (
                "relay_admin_auth_failures_total",
                Counter,
                Count,
                &["reason"],
                "Writes to the saved string refused for a missing or wrong admin token.",
            ),
            Metric::ColdStartsTotal => (
                "relay_cold_starts_total",
                Counter,
                Count,
                &[],
                "Lambda sandboxes that served their first request (0 outside Lambda).",
            ),
            Metric::BuildInfo => (
                "relay_build_info",
                Gauge,
                Count,
                &["version"],
                "Always 1; the labels say which build is running.",
            ),
        };
        Spec {
            name,
            kind,
            unit,
            labels,
            help,
        }
    }
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
        let unit = match spec.unit {
            Unit::Count => "count",
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
        };
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
