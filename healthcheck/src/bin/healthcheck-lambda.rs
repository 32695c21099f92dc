//! The canary as a Lambda function, invoked by an EventBridge schedule: see `healthcheck::lambda`.
//! Kept apart from the CLI binary so the CLI never carries the Lambda runtime; it must never hold
//! logic of its own, so that the handler the tests call is the handler Lambda runs.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    healthcheck::lambda::run().await
}
