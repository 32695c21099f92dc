//! healthcheck: the relayops canary. It probes a relay from outside, the way a browser and an API client
//! would, and reports what it saw. It never reaches into the relay's internals: everything it knows comes
//! over HTTP, so it checks a deployed relay exactly as it checks one on loopback.
//!
//! A guided tour of the crate:

/// The canary's CloudWatch metric catalog: namespace, names, dimensions and units, in one place.
pub mod catalog;
/// The command line and environment (`HEALTHCHECK_*`), parsed once into typed `Settings`.
pub mod config;
/// The Lambda entry: an EventBridge-scheduled handler over the same probes.
#[cfg(feature = "lambda")]
pub mod lambda;
/// The canary's logs: the relay's flat JSON line shape (telemetry-core).
pub mod logging;
/// The canary's vocabulary (a leaf): probe names, failure kinds, latency budgets.
pub mod names;
/// What a probe found: results, failures and the requests made (plain data).
pub mod outcome;
/// The probes, one file each, and the runner that times them against their budgets.
pub mod probe;
/// Publish a run's results to CloudWatch: one batched PutMetricData call.
pub mod publish;
/// A run's report and its renderings: JSON, Markdown (CI step summary), JUnit XML.
pub mod report;
/// The terminal view of a run, for the person who started it.
pub mod terminal;
/// Text helpers (a leaf): milliseconds, one-line excerpts.
pub mod text;

pub use config::Settings;
pub use probe::run_canary;
pub use report::Report;
