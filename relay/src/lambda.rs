//! The Lambda entry: the same Router, served through lambda_http (API Gateway HTTP API v2 events).
//! Metrics become CloudWatch EMF documents, written after each invocation in one write of a whole buffer
//! (so no other line can land inside one); logs go straight to stdout so they are written before the
//! sandbox freezes. Must never: start a listener or a second Router, or panic when stdout fails.

use std::io::Write;

use lambda_http::lambda_runtime::{self, LambdaInvocation};
use tower::ServiceBuilder;

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
    let config = crate::secrets::resolve(config).await?;
    let store = startup::open_store(&config).await?;
    let app = startup::build(&config, store.clone());
    RelayStarted {
        listen: "lambda",
        store: &config.store.to_string(),
    }
    .emit();
    let emf = ServiceBuilder::new()
        // Every EMF document of an invocation names it, so its metrics and log lines can be joined.
        .map_request(move |invocation: LambdaInvocation| {
            collector.set_property("RequestId", invocation.context.request_id.clone());
            collector.set_property("TraceId", invocation.context.xray_trace_id.clone());
            invocation
        })
        .map_future(move |invocation| async move {
            let result = invocation.await;
            let mut documents = Vec::new();
            // Nowhere to report a failed metrics write; the invocation's answer goes out regardless.
            if collector.flush(&mut documents).is_ok() {
                let _ = std::io::stdout().lock().write_all(&documents);
            }
            result
        });
    lambda_runtime::Runtime::new(lambda_http::Adapter::from(app.router))
        .layer(emf)
        .run()
        .await
}
