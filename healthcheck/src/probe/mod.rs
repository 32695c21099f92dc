//! The probes (one file each) and the runner that times them against their budgets.
//!
//! Each probe is an `async fn check(&mut Session) -> Result<String, Failure>`: it makes its requests
//! through the session, stops at the first thing that is wrong, and returns a one-line note on success.
//! The runner gives each attempt a fresh session and request id (`canary-<uuid>`), applies the latency
//! budget (a slow success is a failure) and the retry policy, and never lets a probe's failure stop the
//! others. Probes must never write anything they do not clean up: the only write, the API round trip's
//! message, is deleted by the probe and carries a short TTL in case the delete never arrives.

mod api_roundtrip;
mod app_read;
pub mod http;
mod readyz;
mod saved;
mod website;

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::report::{Report, ms};
use http::{Session, millis};

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

/// Why a probe failed: the kind, a sentence that names the request and what was wrong, and the HTTP
/// status and request id of the response at fault (none when no response came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
    pub status: Option<u16>,
    pub request_id: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, reason: String) -> Self {
        Self {
            kind,
            reason,
            status: None,
            request_id: None,
        }
    }
}

/// One HTTP request a probe made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub method: String,
    /// Path and query, e.g. `/app?limit=1`.
    pub path: String,
    /// None when no response came.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// The `x-request-id` the relay answered with.
    pub request_id: Option<String>,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: ProbeName,
    /// Passed, within budget.
    pub ok: bool,
    /// The HTTP status of the response at fault when failed; of the last response when ok.
    pub status: Option<u16>,
    /// Wall time of the (last) attempt: every request, connection set-up included.
    pub latency_ms: f64,
    pub budget_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure: Option<FailureKind>,
    /// A precise reason when failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// A one-line summary of what was seen when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// The `x-request-id` this probe sent (`canary-<uuid>`) on every request of its last attempt.
    pub request_id_sent: String,
    /// The `x-request-id` the relay answered with (on the response at fault when failed): grep the
    /// relay's logs for it.
    pub request_id: Option<String>,
    pub attempts: u32,
    /// Why earlier attempts failed, when a retry was needed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub earlier_failures: Vec<String>,
    pub steps: Vec<Step>,
}

/// Run every selected probe, one after another (so no probe's latency includes another's load), and
/// collect the report.
pub async fn run_canary(settings: &Settings) -> Report {
    let started_at = Utc::now();
    let start = Instant::now();
    let mut results = Vec::with_capacity(settings.probes.len());
    for probe in &settings.probes {
        let result = run_probe(*probe, settings).await;
        tracing::info!(
            message = "Probe completed.",
            probe = result.probe.as_str(),
            ok = result.ok,
            status = result.status,
            latency_ms = result.latency_ms,
            budget_ms = result.budget_ms,
            failure = result.failure.map(FailureKind::as_str),
            reason = result.reason.as_deref(),
            request_id = result.request_id.as_deref(),
            request_id_sent = result.request_id_sent.as_str(),
            attempts = result.attempts,
        );
        results.push(result);
    }
    Report::new(settings, started_at, start.elapsed(), results)
}

/// Run one probe with its budget and the retry policy.
pub async fn run_probe(probe: ProbeName, settings: &Settings) -> ProbeResult {
    let budget = settings.budgets.of(probe);
    let mut earlier_failures = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut result = attempt(probe, settings, budget).await;
        let last = attempts > settings.retries;
        if result.ok || last {
            result.attempts = attempts;
            result.earlier_failures = earlier_failures;
            return result;
        }
        earlier_failures.push(result.reason.unwrap_or_default());
        tokio::time::sleep(settings.retry_delay).await;
    }
}

async fn attempt(probe: ProbeName, settings: &Settings, budget: Duration) -> ProbeResult {
    let request_id = format!("canary-{}", uuid::Uuid::new_v4());
    let start = Instant::now();
    let (outcome, steps) =
        match Session::new(&settings.target, settings.timeout, request_id.clone()) {
            Ok(mut session) => {
                let outcome = check(probe, &mut session).await;
                (outcome, session.into_steps())
            }
            Err(failure) => (Err(failure), Vec::new()),
        };
    let elapsed = start.elapsed();
    let last_status = steps.iter().rev().find_map(|s| s.status);
    let last_request_id = steps.iter().rev().find_map(|s| s.request_id.clone());
    let outcome = outcome.and_then(|note| {
        if elapsed <= budget {
            return Ok(note);
        }
        let slowest = steps
            .iter()
            .max_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms))
            .map(|s| {
                format!(
                    " (slowest: {} {} in {})",
                    s.method,
                    s.path,
                    ms(s.latency_ms)
                )
            })
            .unwrap_or_default();
        Err(Failure {
            kind: FailureKind::OverBudget,
            reason: format!(
                "took {}, over its {} ms budget{slowest}",
                ms(millis(elapsed)),
                budget.as_millis()
            ),
            status: last_status,
            request_id: last_request_id.clone(),
        })
    });
    let (ok, status, failure, reason, note, returned_id) = match outcome {
        Ok(note) => (true, last_status, None, None, Some(note), last_request_id),
        Err(f) => (
            false,
            f.status,
            Some(f.kind),
            Some(f.reason),
            None,
            f.request_id,
        ),
    };
    ProbeResult {
        probe,
        ok,
        status,
        latency_ms: millis(elapsed),
        budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        failure,
        reason,
        note,
        request_id_sent: request_id,
        request_id: returned_id,
        attempts: 1,
        earlier_failures: Vec::new(),
        steps,
    }
}

async fn check(probe: ProbeName, session: &mut Session<'_>) -> Result<String, Failure> {
    match probe {
        ProbeName::Website => website::check(session).await,
        ProbeName::ApiRoundtrip => api_roundtrip::check(session).await,
        ProbeName::Readyz => readyz::check(session).await,
        ProbeName::Saved => saved::check(session).await,
        ProbeName::AppRead => app_read::check(session).await,
    }
}
