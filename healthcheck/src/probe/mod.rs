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

use crate::config::Settings;
use crate::names::{FailureKind, ProbeName};
use crate::outcome::{Failure, ProbeResult};
use crate::report::Report;
use crate::text::{millis, ms};
use http::Session;
use telemetry_core::trace::TraceId;

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
            trace_id = result.trace_id.as_str(),
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
    let trace_id = TraceId::random();
    let start = Instant::now();
    let (outcome, steps) = match Session::new(
        &settings.target,
        settings.timeout,
        request_id.clone(),
        trace_id,
    ) {
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
        trace_id: trace_id.to_string(),
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
