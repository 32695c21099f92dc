//! Telemetry: structured logs (tracing, JSON lines to stdout) and metrics (the `metrics` facade with a
//! Prometheus recorder, served at `/metrics`). Events that emit both live in [`events`]; the metric
//! catalog lives in [`names`].

pub mod events;
pub mod names;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;
use names::{Kind, Metric};

/// Buckets for every duration histogram, in seconds: fine below 10 ms where the relay usually answers,
/// coarse up to the request timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the global log subscriber. Filters come from `RUST_LOG` (default `info`). Call once, from main.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_span_events(FmtSpan::NONE);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
}

/// The process-wide Prometheus recorder, installed on first use (tests build many apps in one process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then ours still
            // renders, only without the facade's events.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

fn describe_all() {
    for metric in Metric::ALL {
        let spec = metric.spec();
        let unit = match spec.unit {
            names::Unit::Count => metrics::Unit::Count,
            names::Unit::Seconds => metrics::Unit::Seconds,
            names::Unit::Bytes => metrics::Unit::Bytes,
        };
        match spec.kind {
            Kind::Counter => metrics::describe_counter!(spec.name, unit, spec.help),
            Kind::Gauge => metrics::describe_gauge!(spec.name, unit, spec.help),
            Kind::Histogram => metrics::describe_histogram!(spec.name, unit, spec.help),
        }
    }
}
