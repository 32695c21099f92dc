//! One debug line per DynamoDB call attempt (an SDK interceptor): which call (`GetItem`,
//! `TransactWriteItems`, ...), which attempt, how long it took, and how it ended. Retries and timeouts
//! are otherwise invisible above the SDK, where the store operation's own line sees only the last
//! outcome. At `info` nothing is written; with the debug buffer on (`--log-buffer debug`) a failed or
//! slow request writes these lines before its request line, inside its request span and the store
//! operation's span (`op`, `backend`).
//!
//! The lines are tracing events of the backend itself: the store never imports telemetry (which wraps
//! it), as the table's other debug lines show.
//!
//! Must never: log a request or response body (message text), or cost anything when debug is off.

use std::time::Instant;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, DisplayErrorContext};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// The target of the attempt lines, which the log set-up lets through at debug for exported spans.
pub const TARGET: &str = module_path!();

/// The interceptor, added to the client's configuration.
#[derive(Debug)]
pub struct AttemptLog;

/// When the attempt in flight started, kept in the call's interceptor state.
#[derive(Debug, Clone)]
struct AttemptStart(Instant);

impl Storable for AttemptStart {
    type Storer = StoreReplace<Self>;
}

impl Intercept for AttemptLog {
    fn name(&self) -> &'static str {
        "AttemptLog"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            cfg.interceptor_state()
                .store_put(AttemptStart(Instant::now()));
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(AttemptStart(start)) = cfg.load::<AttemptStart>() else {
            return Ok(());
        };
        let latency_ms = telemetry_core::millis(start.elapsed());
        let call = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
        let attempt = cfg
            .load::<RequestAttempts>()
            .map_or(1, RequestAttempts::attempts);
        // Not `status`, which means the relay's own response on the request line.
        let http_status = context.response().map(|r| r.status().as_u16());
        let error = match context.output_or_error() {
            Some(Err(error)) => Some(error),
            _ => None,
        };
        let (message, outcome) = match error {
            Some(_) => ("DynamoDB call attempt failed.", "error"),
            None => ("DynamoDB call attempt finished.", "ok"),
        };
        tracing::debug!(
            message,
            call,
            attempt,
            latency_ms,
            http_status,
            outcome,
            error = error.map(|e| tracing::field::display(DisplayErrorContext(e)))
        );
        Ok(())
    }
}
