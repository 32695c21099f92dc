//! The canary's logs: the same flat JSON lines as the relay's (`telemetry-core`'s layer), with
//! `service: "healthcheck"` and the stage as `env`, so one set of Logs Insights queries reads both.
//! Filters come from `RUST_LOG`, else the default the entry point passes.

use telemetry_core::{Identity, JsonLayer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where the lines go: the CLI keeps stdout for its terminal view, the Lambda has only stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Install the global log subscriber (once; a second call changes nothing).
pub fn init(stage: &str, default_filter: &str, output: Output) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let identity = Identity {
        service: "healthcheck",
        version: env!("CARGO_PKG_VERSION"),
        env: stage.to_owned(),
    };
    let layer = match output {
        Output::Stdout => JsonLayer::new(&identity, std::io::stdout).boxed(),
        Output::Stderr => JsonLayer::new(&identity, std::io::stderr).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
