//! Telemetry: structured logs (tracing, one flat JSON object per line on stdout) and metrics (the
//! `metrics` facade). Metrics are exported as Prometheus text at `/metrics` when the relay runs as a
//! server, and as CloudWatch Embedded Metric Format lines when it runs in Lambda. Events that emit both
//! a log line and a metric live in [`events`]; the metric catalog lives in [`names`].

#![allow(clippy::disallowed_macros)] // the one place metrics are emitted

pub mod events;
pub mod format;
pub mod names;
pub mod paced;
pub mod request;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use names::{Kind, Metric};

/// The service name on every log line and the CloudWatch namespace of the relay's metrics.
pub const SERVICE: &str = "relay";
pub const NAMESPACE: &str = "Relay";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Buckets for every duration histogram, in seconds: fine below 10 ms where the relay usually answers,
/// coarse up to the request timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the relay runs, which decides the log writer and the metric exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A long-running server: logs through a non-blocking writer, metrics at `/metrics`.
    Server,
    /// AWS Lambda: logs written before the invocation returns (the sandbox freezes after it), metrics as EMF.
    Lambda,
}

/// Keep this alive until exit: dropping it flushes buffered log lines.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _flusher: Option<paced::PacedFlusher>,
}

/// Install the global log subscriber. Filters come from `RUST_LOG` (default `info`). Call once.
pub fn init_logging(format: LogFormat, env: &str, runtime: Runtime) -> LogGuard {
    let (targets, env_filter) = filters(std::env::var("RUST_LOG").ok().as_deref());
    // Servers: lines go into a shared buffer written out by a ticker thread (see `paced`): lossless,
    // one write per interval under load, each line out within the interval when idle. Lambda: straight
    // to stdout, so lines are written before the invocation returns (the sandbox freezes after it).
    let paced = match runtime {
        Runtime::Server => paced::paced(std::io::stdout(), paced::FLUSH_INTERVAL).ok(),
        Runtime::Lambda => None,
    };
    // The span way of carrying request fields where something reads spans: the pretty format shows
    // them, and span or field directives (only `EnvFilter` has them) match on them.
    let spans = format == LogFormat::Pretty || env_filter.is_some();
    REQUEST_SPANS.store(spans, Ordering::Relaxed);
    let identity = format::Identity {
        service: SERVICE,
        version: VERSION,
        env: env.to_owned(),
    };
    let (writer, flusher) = match paced {
        Some((sink, flusher)) => {
            // Where the JSON layer is the only reader of the request line's event, the line is written
            // directly (see `format::RequestLines`).
            if let (LogFormat::Json, false, Some(targets)) = (format, spans, &targets) {
                let lines =
                    format::RequestLines::new(&identity, events::TARGET, targets, sink.clone());
                let _ = REQUEST_LINES.set(lines);
            }
            (LogWriter::Paced(sink), Some(flusher))
        }
        // Lambda, or no thread could be started for the ticker: each line straight to stdout.
        None => (LogWriter::Stdout, None),
    };
    let filtered = tracing_subscriber::registry()
        .with(targets)
        .with(env_filter);
    let result = match format {
        LogFormat::Json => filtered
            .with(format::JsonLayer::new(identity, writer))
            .try_init(),
        LogFormat::Pretty => filtered
            .with(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(writer),
            )
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
    LogGuard { _flusher: flusher }
}

/// The log filter for `RUST_LOG` (default `info`; an invalid value also means `info`). A list of
/// `target=level` directives, the usual case, filters with `Targets`, which decides once per call site;
/// `EnvFilter`, needed only for span and field directives, also takes a lock on every span enter, exit
/// and close, on every request.
fn filters(directives: Option<&str>) -> (Option<Targets>, Option<EnvFilter>) {
    let directives = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("info");
    // `Targets` would read `relay[request]=debug` as a target named `relay[request]`.
    let span_or_field = directives.contains(['[', '{']);
    match directives.parse::<Targets>() {
        Ok(targets) if !span_or_field => (Some(targets), None),
        _ => (
            None,
            Some(EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))),
        ),
    }
}

/// Where log lines go: the paced buffer (servers) or stdout directly (Lambda). Chosen once at start,
/// not boxed per line.
enum LogWriter {
    Paced(paced::PacedWriter),
    Stdout,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EitherWriter<paced::PacedLine<'a>, std::io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Self::Paced(writer) => EitherWriter::A(writer.make_writer()),
            Self::Stdout => EitherWriter::B(std::io::stdout()),
        }
    }
}

enum Exporter {
    Prometheus(PrometheusHandle),
    Emf,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether a metrics exporter (Prometheus or EMF) has been installed in this process.
pub fn exporter_installed() -> bool {
    EXPORTER.get().is_some()
}

/// The Prometheus handle for `/metrics`, installing the Prometheus recorder if no exporter is installed
/// yet (servers and tests). `None` when the relay exports EMF instead (Lambda).
pub fn prometheus() -> Option<PrometheusHandle> {
    let exporter = EXPORTER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's): ours then renders
        // nothing, which the /metrics tests would catch.
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
        Exporter::Prometheus(handle)
    });
    match exporter {
        Exporter::Prometheus(handle) => Some(handle.clone()),
        Exporter::Emf => None,
    }
}

/// Install the CloudWatch EMF recorder (namespace `Relay`, dimension `env` plus each metric's labels).
pub fn install_emf(env: &str) -> Result<&'static metrics_cloudwatch_embedded::Collector, String> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("env", env.to_owned())
        .with_lambda_request_id("RequestId")
        .with_lambda_xray_trace_id("TraceId")
        .init()
        .map_err(|e| format!("cannot install the EMF recorder: {e}"))?;
    EXPORTER
        .set(Exporter::Emf)
        .map_err(|_| "a metrics exporter was already installed".to_owned())?;
    describe_all();
    Ok(collector)
}

fn describe_all() {
    metrics::gauge!(Metric::BuildInfo.as_str(), "version" => VERSION).set(1.0);
    for metric in Metric::ALL {
        let spec = metric.spec();
        // Unlabelled counters start at zero, so rates and alarms have data from the first scrape.
        if spec.kind == Kind::Counter && spec.labels.is_empty() {
            metrics::counter!(spec.name).increment(0);
        }
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

static REQUEST_LINES: OnceLock<format::RequestLines> = OnceLock::new();

/// The direct writer of request lines, where logging installed one (see [`format::RequestLines`]).
pub fn request_lines() -> Option<&'static format::RequestLines> {
    REQUEST_LINES.get()
}

static REQUEST_SPANS: AtomicBool = AtomicBool::new(false);

/// Whether requests are logged inside a tracing span (`true`) or with their fields in
/// [`request::RequestFields`] read by the JSON layer (`false`, also when logging was never
/// initialised). Decided by [`init_logging`]; see [`request`].
pub fn request_spans() -> bool {
    REQUEST_SPANS.load(Ordering::Relaxed)
}

static ON_LAMBDA: AtomicBool = AtomicBool::new(false);
static COLD: AtomicBool = AtomicBool::new(true);

/// Mark the process as a Lambda function, so requests report `cold_start`.
pub fn mark_lambda() {
    ON_LAMBDA.store(true, Ordering::Relaxed);
}

/// In Lambda: `Some(true)` for the first request of this sandbox, then `Some(false)`. Elsewhere `None`.
pub fn cold_start() -> Option<bool> {
    ON_LAMBDA
        .load(Ordering::Relaxed)
        .then(|| COLD.swap(false, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use tracing::Level;
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::layer::Filter;

    use super::*;

    #[test]
    fn target_level_lists_filter_with_targets_and_span_directives_with_env_filter() {
        let (targets, env) = filters(None);
        let targets = targets.expect("the default is a plain level");
        assert!(env.is_none());
        assert!(targets.would_enable("relay::http", &Level::INFO));
        assert!(!targets.would_enable("relay::http", &Level::DEBUG));

        let (targets, _) = filters(Some("warn,relay::store=debug"));
        let targets = targets.expect("target=level directives");
        assert!(targets.would_enable("relay::store::sqlite", &Level::DEBUG));
        assert!(!targets.would_enable("relay::http", &Level::INFO));
        assert!(targets.would_enable("relay::http", &Level::WARN));

        let (targets, env) = filters(Some("relay[request]=debug"));
        assert!(targets.is_none(), "span directives need EnvFilter");
        let env = env.expect("span directives");
        assert_eq!(
            Filter::<tracing_subscriber::Registry>::max_level_hint(&env),
            Some(LevelFilter::DEBUG)
        );

        let (targets, env) = filters(Some("relay=loud"));
        assert!(targets.is_none());
        let env = env.expect("an invalid value falls back to EnvFilter at info");
        assert_eq!(
            Filter::<tracing_subscriber::Registry>::max_level_hint(&env),
            Some(LevelFilter::INFO)
        );
    }
}
