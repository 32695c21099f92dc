//! Telemetry: structured logs (tracing, one flat JSON object per line on stdout, written by
//! `telemetry-core`'s layer) and metrics (the `metrics` facade). Metrics are exported as Prometheus text
//! at `/metrics` when the relay runs as a server, and as CloudWatch Embedded Metric Format lines when it
//! runs in Lambda. One log path in every runtime: every line, the request line included, is a tracing
//! event. Events that emit a log line and a metric live in [`events`]; the metric catalog in [`names`].
//! Spans are exported over OTLP by telemetry-core's `otel` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

#![allow(clippy::disallowed_macros)] // the one place metrics are emitted

pub mod events;
pub mod handles;
pub mod names;
pub mod request;
pub mod store;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use telemetry_core::otel;
use telemetry_core::paced::{self, PacedWriter};
use telemetry_core::{Buffering, Identity, JsonLayer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};
use crate::store::dynamodb::ATTEMPTS_TARGET;
use names::{Kind, Metric};

/// The service name on every log line and the CloudWatch namespace of the relay's metrics.
pub const SERVICE: &str = "relay";
pub const NAMESPACE: &str = "Relay";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Buckets for every duration histogram, in seconds: fine below 10 ms where the relay usually answers,
/// coarse up to the request timeout. 0.3 is the latency SLO's threshold (slos/relay.yaml): its
/// Prometheus error ratio reads the `le="0.3"` bucket.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the relay runs, which decides the log writer and the metric exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A long-running server: logs through the paced writer, metrics at `/metrics`.
    Server,
    /// AWS Lambda: logs written before the invocation returns (the sandbox freezes after it), metrics as EMF.
    Lambda,
}

/// Keep this alive until exit: dropping it exports the spans left (OpenTelemetry), then flushes
/// buffered log lines.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _flusher: Option<paced::PacedFlusher>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        otel::shutdown();
    }
}

/// Install the global log subscriber for `config`'s format, environment and debug sampling. Filters
/// come from `RUST_LOG` (default `info`; span directives such as `warn,relay[request]=debug` work).
/// Call once.
pub fn init_logging(config: &Config, runtime: Runtime) -> LogGuard {
    // Servers: lines go into a shared buffer written out by a thread of its own (`paced`). Lambda, or
    // no thread could be started: each line straight to stdout, written before the invocation returns.
    let paced = match runtime {
        Runtime::Server => {
            paced::paced(std::io::stdout(), paced::FLUSH_INTERVAL, paced::MAX_WAIT).ok()
        }
        Runtime::Lambda => None,
    };
    let (writer, flusher) = match paced {
        Some((writer, flusher)) => {
            let _ = LOG_WRITER.set(writer.clone());
            (LogWriter::Paced(writer), Some(flusher))
        }
        None => (LogWriter::Stdout, None),
    };
    let identity = Identity {
        service: SERVICE,
        version: VERSION,
        env: config.environment.clone(),
    };
    let (mut targets, env_filter) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let sampling = config.debug_sample_rate > 0.0;
    let buffering = config.log_buffer != LevelFilter::OFF;
    let export = match runtime {
        Runtime::Server => otel::Export::Background,
        Runtime::Lambda => otel::Export::Flushed,
    };
    let spans = otel::layer(SERVICE, VERSION, export, span_event, ATTRIBUTE_NAMES);
    // Both layers and both filters are optional rather than boxed, so each span and event reaches
    // them without a virtual call; exactly one of each pair is present.
    let (json, pretty) = match config.log_format {
        LogFormat::Json => {
            let mut json = JsonLayer::new(&identity, writer);
            // Sampled requests, the debug buffer and exported spans: the filter lets through, below
            // the output level, what each needs (the relay's lines down to their level; the store
            // spans and their DynamoDB attempts for OpenTelemetry), and the layer decides what
            // becomes of the lines the output filter would not write (telemetry-core's crate docs).
            if (sampling || buffering || spans.is_some())
                && let Some(output) = targets.clone()
            {
                // Sampling needs debug; the buffer its own level; OFF is below every level.
                let relay = if sampling {
                    config.log_buffer.max(LevelFilter::DEBUG)
                } else {
                    config.log_buffer
                };
                let store = if spans.is_some() {
                    LevelFilter::DEBUG
                } else {
                    LevelFilter::OFF
                };
                let mut widened = output.clone();
                for (target, level) in [
                    ("relay", relay),
                    (store::TARGET, store),
                    (ATTEMPTS_TARGET, store),
                ] {
                    if let Some(at) = level.into_level()
                        && !widened.would_enable(target, &at)
                    {
                        widened = widened.with_target(target, level);
                    }
                }
                targets = Some(widened);
                request::sample_debug(config.debug_sample_rate);
                let buffer = buffering.then(|| {
                    request::flush_slower_than(config.log_buffer_slow);
                    Buffering {
                        level: config.log_buffer,
                        max_bytes: config.log_buffer_max_bytes as usize,
                    }
                });
                json = json.below_output(output, buffer);
            }
            (Some(json), None)
        }
        LogFormat::Pretty => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(writer),
            ),
        ),
    };
    if (sampling || buffering) && (json.is_none() || env_filter.is_some()) {
        eprintln!(
            "debug sampling and the debug buffer need JSON lines and a target=level RUST_LOG; they are off"
        );
    }
    if let Err(error) = tracing_subscriber::registry()
        .with(targets)
        .with(env_filter)
        .with(json)
        .with(pretty)
        .with(spans)
        .try_init()
    {
        eprintln!("logging was already initialised: {error}");
    }
    LogGuard { _flusher: flusher }
}

/// Which lines inside an exported span become its events: the DynamoDB attempts (the retries inside a
/// store call) and warnings and errors. The others are in the log, under the same ids.
fn span_event(line: &tracing::Metadata<'_>) -> bool {
    *line.level() <= tracing::Level::WARN || line.target() == ATTEMPTS_TARGET
}

/// The request and store spans' fields under their OpenTelemetry names: method, route and the store's
/// operation and backend by the semantic conventions; the ids, which the lines carry as fields, are the
/// exported span's own. Any other field (`request_id`, `xray_trace_id`, `problem`) keeps its name.
const ATTRIBUTE_NAMES: otel::AttributeNames = &[
    ("trace_id", None),
    ("span_id", None),
    ("method", Some("http.request.method")),
    ("route", Some("http.route")),
    ("op", Some("db.operation.name")),
    ("backend", Some("db.system")),
];

/// The server's paced log writer, for [`take_dropped_log_lines`].
static LOG_WRITER: OnceLock<PacedWriter> = OnceLock::new();

/// The log lines dropped since the last call while stdout's reader stalled, once the writer is writing
/// again (`None` while it is still stalled, when nothing was dropped, or in Lambda).
pub fn take_dropped_log_lines() -> Option<u64> {
    LOG_WRITER.get()?.take_dropped()
}

/// The filter for `RUST_LOG` (default `info`; an invalid value says so on stderr and means `info`).
/// `target=level` lists, the usual case, use tracing-subscriber's `Targets`, which decides per call site
/// once; only span or field directives (`relay[request]=debug`) need `EnvFilter`, which also takes a
/// shared lock on every span enter, exit and close, so on every request. Exactly one of the two is set.
fn log_filter(directives: Option<&str>) -> (Option<Targets>, Option<EnvFilter>) {
    let directives = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("info");
    if !directives.contains(['[', '{'])
        && let Ok(targets) = directives.parse::<Targets>()
    {
        return (Some(targets), None);
    }
    let env_filter = EnvFilter::try_new(directives).unwrap_or_else(|error| {
        eprintln!("RUST_LOG={directives:?} is not a log filter ({error}); logging at info");
        EnvFilter::new("info")
    });
    (None, Some(env_filter))
}

/// Where log lines go: the paced buffer (servers) or stdout directly (Lambda). Chosen once at start,
/// not boxed per line.
enum LogWriter {
    Paced(PacedWriter),
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

/// Install `recorder` (the Lambda runtime's EMF recorder, `lambda::emf`) as the metrics recorder, and
/// describe the catalog to it. `/metrics` then has no Prometheus handle.
pub fn install_emf<R: metrics::Recorder + Send + Sync + 'static>(
    recorder: R,
) -> Result<(), String> {
    EXPORTER
        .set(Exporter::Emf)
        .map_err(|_| "a metrics exporter was already installed".to_owned())?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the EMF recorder: {e}"))?;
    describe_all();
    Ok(())
}

fn describe_all() {
    metrics::gauge!(Metric::BuildInfo.as_str(), "version" => VERSION).set(1.0);
    for metric in Metric::ALL {
        let spec = metric.spec();
        let unit = spec.unit;
        match spec.kind {
            Kind::Counter => metrics::describe_counter!(spec.name, unit, spec.help),
            Kind::Gauge => metrics::describe_gauge!(spec.name, unit, spec.help),
            Kind::Histogram => metrics::describe_histogram!(spec.name, unit, spec.help),
        }
    }
}
