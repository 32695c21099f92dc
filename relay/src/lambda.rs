//! The Lambda entry: the same Router, served through lambda_http (API Gateway HTTP API v2 events).
//! Metrics become CloudWatch EMF lines flushed after each invocation; logs go straight to stdout so
//! they are written before the sandbox freezes. Must never: start a listener or a second Router.

use crate::config::Config;
use crate::startup;
use crate::telemetry;
use crate::telemetry::events::{Event, RelayStarted};

/// Whether this process was started by the Lambda runtime.
pub fn is_running_on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Serve Lambda invocations until the runtime stops the process.
pub async fn run(config: Config) -> Result<(), lambda_http::Error> {
    telemetry::request::mark_lambda();
    let collector = telemetry::install_emf(&config.environment)?;
    let store = startup::open_store(&config).await?;
    let app = startup::build(&config, store.clone());
    RelayStarted {
        listen: "lambda",
        store: &config.store.to_string(),
    }
    .emit();
    metrics_cloudwatch_embedded::lambda::service::run_http(collector, app.router).await
}
