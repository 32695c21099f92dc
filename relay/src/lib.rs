//! relay: an observability-first HTTP message relay. A guided tour of the crate:

/// The command line and environment, parsed once into typed values.
pub mod config;
/// Parsed domain values: ids, bodies, TTLs, revisions, cursors. No I/O.
pub mod domain;
/// The HTTP API: one module per resource, errors as problem details, middleware.
pub mod http;
/// The Lambda entry: the same Router behind lambda_http, metrics as CloudWatch EMF.
pub mod lambda;
/// Secrets read at start: the admin token from Secrets Manager.
pub mod secrets;
/// The accept loop: connection cap, head and idle timeouts, closing connections at shutdown.
pub mod server;
/// The message service shared by `/messages` and `/paste`: store + cache + events.
pub mod service;
/// Build the Router and serve it.
pub mod startup;
/// The `Store` trait, its backends, and the conformance suite they all pass.
pub mod store;
/// Logs, metrics, the metric catalog, the typed events that emit both, and the store's instrumentation.
pub mod telemetry;
/// What the tests of this crate and of the canary share: `TestApp` (a relay on loopback) and helpers.
#[cfg(feature = "test-support")]
pub mod test_support;
