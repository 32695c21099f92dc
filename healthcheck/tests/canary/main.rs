//! The canary's tests: probes against a real relay started in this process, failures injected through
//! a stopped relay, a closed store and a fake relay, the CLI binary's exit codes and reports, the
//! Lambda handler, and CloudWatch publishing against the local AWS-API server.
//! One test binary (faster to link); one module per concern. No test may reach anything but loopback:
//! the relay, the fakes and the local AWS-API server all listen on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod cloudwatch;
mod faults;
mod helpers;
#[cfg(feature = "lambda")]
mod lambda;
mod probes;
