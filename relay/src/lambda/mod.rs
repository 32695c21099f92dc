//! The Lambda entry: the same Router, served through lambda_http (API Gateway HTTP API v2 events).
//! Metrics are recorded by [`emf::Emf`] and written after each invocation as one CloudWatch EMF
//! document where the label values allow, in one write of a whole buffer (so no other line can land
//! inside one); logs go straight to stdout so they are written before the sandbox freezes.
//! Must never: start a listener or a second Router, or panic when stdout fails.

use std::io::Write;

use lambda_http::lambda_runtime::{self, LambdaInvocation};
use telemetry_core::otel;
use tower::ServiceBuilder;

pub mod emf;

use crate::config::Config;
use crate::startup;
use crate::telemetry;
use crate::telemetry::events::{Event, RelayStarted};
use emf::Emf;

/// Whether this process was started by the Lambda runtime.
pub fn is_running_on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Serve Lambda invocations until the runtime stops the process.
pub async fn run(config: Config) -> Result<(), lambda_http::Error> {
    telemetry::request::mark_lambda();
    let emf = Emf::new(telemetry::NAMESPACE, ("env", config.environment.clone()));
    telemetry::install_emf(emf.clone())?;
    let config = crate::secrets::resolve(config).await?;
    let store = startup::open_store(&config).await?;
    let app = startup::build(&config, store.clone(), telemetry::Runtime::Lambda);
    RelayStarted {
        listen: "lambda",
        store: &config.store.to_string(),
        max_connections: None,
    }
    .emit();
    // After each invocation, its metrics as EMF (one document where it can, see `emf`), naming the
    // invocation, so they join Lambda's REPORT line of it.
    let flush = ServiceBuilder::new()
        .map_request({
            let emf = emf.clone();
            move |invocation: LambdaInvocation| {
                emf.set_property("RequestId", &invocation.context.request_id);
                invocation
            }
        })
        .map_future(move |invocation| {
            let emf = emf.clone();
            async move {
                let result = invocation.await;
                // The sandbox may freeze once the invocation returns: its spans go out now, from a
                // blocking thread (the exporter's HTTP client blocks).
                if otel::enabled() {
                    let _ = tokio::task::spawn_blocking(otel::flush).await;
                }
                // Nowhere to report a failed metrics write; the invocation's answer goes out regardless.
                let _ = write_at_once(&mut std::io::stdout().lock(), |buffer| {
                    emf.flush(buffer).map_err(std::io::Error::from)
                });
                result
            }
        });
    lambda_runtime::Runtime::new(lambda_http::Adapter::from(app.router))
        .layer(flush)
        .run()
        .await
}

/// Render into a buffer, then hand the whole buffer to `out` in one `write_all`: serde_json writes an
/// EMF document in many small pieces, and a line another task logs must not land between them.
/// Nothing is written when rendering fails.
fn write_at_once(
    out: &mut impl Write,
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    render(&mut buffer)?;
    out.write_all(&buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every `write` call it receives.
    #[derive(Default)]
    struct Calls(Vec<Vec<u8>>);

    impl Write for Calls {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn documents_written_in_pieces_reach_the_output_in_one_write() -> std::io::Result<()> {
        let mut out = Calls::default();
        write_at_once(&mut out, |buffer| {
            for piece in [
                r#"{"_aws":"#,
                r#"{"Timestamp":1}"#,
                "}\n",
                r#"{"_aws":{}}"#,
                "\n",
            ] {
                buffer.write_all(piece.as_bytes())?;
            }
            Ok(())
        })?;
        assert_eq!(out.0.len(), 1, "one write for all the documents");
        assert_eq!(out.0[0], b"{\"_aws\":{\"Timestamp\":1}}\n{\"_aws\":{}}\n");
        Ok(())
    }

    #[test]
    fn a_failed_render_writes_nothing() {
        let mut out = Calls::default();
        let result = write_at_once(&mut out, |buffer| {
            buffer.write_all(b"{\"_aws\":")?;
            Err(std::io::Error::other("no more"))
        });
        assert!(result.is_err());
        assert!(out.0.is_empty(), "half a document is never written");
    }
}
