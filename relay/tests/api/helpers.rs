//! The shared test support (`relay::test_support`, behind the `test-support` feature), plus the one
//! thing only an integration test knows: where cargo built the relay binary.

pub use relay::test_support::*;
use serde_json::Value;

/// Start this build's relay binary (see `relay::test_support::spawn_binary`).
pub async fn spawn_binary(envs: &[(&str, &str)]) -> RelayProcess {
    relay::test_support::spawn_binary(env!("CARGO_BIN_EXE_relay"), envs).await
}

/// Start this build's relay binary through a wrapper that execs it (see
/// `relay::test_support::spawn_binary_under`).
pub async fn spawn_binary_under(wrapper: &[&str], envs: &[(&str, &str)]) -> RelayProcess {
    relay::test_support::spawn_binary_under(wrapper, env!("CARGO_BIN_EXE_relay"), envs).await
}

/// Start this build's relay binary and wait until it is alive, not ready (see
/// `relay::test_support::spawn_binary_live`).
pub async fn spawn_binary_live(envs: &[(&str, &str)]) -> RelayProcess {
    relay::test_support::spawn_binary_live(env!("CARGO_BIN_EXE_relay"), envs).await
}

/// Every line of `stdout` as JSON, each checked to be one object whose keys are unique.
pub fn parse_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            telemetry_core::strict::parse_object(line)
                .unwrap_or_else(|e| panic!("not one JSON object with unique keys per line: {e}"));
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
        })
        .collect()
}
