//! The Lambda entry: an EventBridge schedule invokes `handler`, which runs the same probes as the CLI
//! and publishes the same metrics. Settings come from the same `HEALTHCHECK_*` environment variables
//! (target, stage, budgets, timeout, retries); report file paths are ignored (a Lambda has no place
//! for them) and CloudWatch publishing is always on: metrics are this entry's only output besides one
//! JSON log line per probe and per run, and the JSON result of the invocation.
//!
//! A failed probe is data, not an error: the invocation still succeeds, so Lambda does not retry it
//! (which would probe twice and publish twice). The invocation fails only when the canary itself
//! could not do its job (metrics not published), which the Lambda `Errors` metric and the canary's
//! missing-data alarm both show. It must never hold state between invocations beyond the clients.

use clap::Parser;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};

use crate::config::{RunArgs, Settings};
use crate::logging;
use crate::probe::run_canary;
use crate::publish::Publisher;
use crate::report::Report;

/// The parts of an EventBridge scheduled event the canary logs. Every field is optional, so a
/// hand-made `{}` test event works too.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ScheduledEvent {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "detail-type")]
    pub detail_type: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
}

/// The same run settings as the CLI, read from the environment only.
#[derive(Debug, Parser)]
#[command(name = "healthcheck-lambda")]
struct LambdaArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// What the handler needs: settings parsed once at cold start, and the CloudWatch client (None only
/// in tests, which call the handler without AWS).
pub struct Canary {
    pub settings: Settings,
    pub publisher: Option<Publisher>,
}

/// The invocation's result.
#[derive(Debug, Serialize)]
pub struct Invocation {
    pub ok: bool,
    pub headline: String,
    /// Data points sent to CloudWatch.
    pub published: usize,
    /// The EventBridge event id, to tie this run to its schedule.
    pub event_id: Option<String>,
    pub report: Report,
}

/// Run the probes once and publish the metrics.
pub async fn handler(
    event: LambdaEvent<ScheduledEvent>,
    canary: &Canary,
) -> Result<Invocation, Error> {
    let (event, context) = event.into_parts();
    let report = run_canary(&canary.settings).await;
    let published = match &canary.publisher {
        Some(publisher) => publisher.publish(&report).await?,
        None => 0,
    };
    tracing::info!(
        message = "Canary run finished.",
        ok = report.ok,
        stage = report.stage.as_str(),
        passed = report.passed,
        failed = report.failed,
        duration_ms = report.duration_ms,
        published,
        event_id = event.id.as_deref(),
        detail_type = event.detail_type.as_deref(),
        scheduled_time = event.time.as_deref(),
        aws_request_id = context.request_id.as_str(),
    );
    Ok(Invocation {
        ok: report.ok,
        headline: report.headline(),
        published,
        event_id: event.id,
        report,
    })
}

/// Read the settings from the environment, then serve invocations until the runtime stops.
pub async fn run() -> Result<(), Error> {
    let args = LambdaArgs::try_parse_from(["healthcheck-lambda"])?;
    let settings = Settings::from_args(&args.run)?;
    logging::init(settings.stage.as_str(), "info", logging::Output::Stdout);
    let canary = Canary {
        settings,
        publisher: Some(Publisher::from_env().await),
    };
    let canary = &canary;
    lambda_runtime::run(service_fn(move |event| handler(event, canary))).await
}
