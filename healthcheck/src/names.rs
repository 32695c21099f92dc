//! The canary's vocabulary: its probes' names, how a probe can fail, and each probe's latency budget.
//! A leaf: it imports nothing from the crate, so configuration, probes, reports and the metric catalog
//! can all name these without importing each other.

use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Every probe, by the name it carries in reports and in the `Probe` metric dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeName {
    Website,
    ApiRoundtrip,
    Readyz,
    Saved,
    AppRead,
}

impl ProbeName {
    pub const ALL: [ProbeName; 5] = [
        ProbeName::Website,
        ProbeName::ApiRoundtrip,
        ProbeName::Readyz,
        ProbeName::Saved,
        ProbeName::AppRead,
    ];

    /// The name in reports and the `Probe` dimension value (also the `--probes` value).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeName::Website => "website",
            ProbeName::ApiRoundtrip => "api-roundtrip",
            ProbeName::Readyz => "readyz",
            ProbeName::Saved => "saved",
            ProbeName::AppRead => "app-read",
        }
    }

    /// What the probe checks, in one line.
    pub const fn checks(self) -> &'static str {
        match self {
            ProbeName::Website => {
                "GET / is the web app (text/html) and the /assets/app.js and /assets/app.css it references load with their content types"
            }
            ProbeName::ApiRoundtrip => {
                "POST /messages (60 s TTL, canary marker), GET it back and compare, GET /messages count, DELETE it"
            }
            ProbeName::Readyz => "GET /readyz is 200 with status \"ready\" (the store answers)",
            ProbeName::Saved => "GET /saved is the text/html page with the saved string heading",
            ProbeName::AppRead => {
                "GET /app?limit=1 is a JSON page of at most one RFC 3339 timestamp"
            }
        }
    }
}

impl std::fmt::Display for ProbeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a probe failed: a bounded set, fit for a label or a JUnit failure type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No TCP (or TLS) connection: nothing listens, DNS fails, a firewall drops it.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Any other transport error (reset, malformed HTTP).
    Request,
    /// An unexpected HTTP status.
    Status,
    /// The right status with the wrong `content-type`.
    ContentType,
    /// A body that is not what the route serves (not JSON, not the page, too short).
    Body,
    /// A well-formed answer that says the wrong thing (read-back differs, count too low).
    Mismatch,
    /// Everything was right but slower than the probe's budget.
    OverBudget,
}

impl FailureKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Request => "request",
            FailureKind::Status => "status",
            FailureKind::ContentType => "content_type",
            FailureKind::Body => "body",
            FailureKind::Mismatch => "mismatch",
            FailureKind::OverBudget => "over_budget",
        }
    }
}

/// How long each probe may take, in all, before a success counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub website: Duration,
    pub api_roundtrip: Duration,
    pub readyz: Duration,
    pub saved: Duration,
    pub app_read: Duration,
}

impl Default for Budgets {
    /// Generous enough for a Lambda cold start behind API Gateway; tight enough to catch a store that
    /// answers in seconds.
    fn default() -> Self {
        Self {
            website: Duration::from_secs(2),
            api_roundtrip: Duration::from_secs(3),
            readyz: Duration::from_secs(1),
            saved: Duration::from_secs(1),
            app_read: Duration::from_secs(1),
        }
    }
}

impl Budgets {
    pub fn of(&self, probe: ProbeName) -> Duration {
        match probe {
            ProbeName::Website => self.website,
            ProbeName::ApiRoundtrip => self.api_roundtrip,
            ProbeName::Readyz => self.readyz,
            ProbeName::Saved => self.saved,
            ProbeName::AppRead => self.app_read,
        }
    }
}
