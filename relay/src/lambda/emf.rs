//! CloudWatch Embedded Metric Format: the `metrics` recorder of the Lambda runtime. It keeps what one
//! invocation recorded and [`Emf::flush`] writes it as **one document** where it can: every label set
//! gets its own metric directive (its dimension set) inside the same document, so a request's counters,
//! latency and store timings cost one log event instead of one per label set.
//!
//! A second document is only needed when two samples cannot share one: EMF takes each dimension's value
//! and each metric's value from the document's top-level members, so one document holds one value per
//! label (two store operations with different `op` in one invocation) and per metric name; and a
//! directive holds at most 100 metrics, a metric at most 100 values.
//!
//! Counters are emitted as the increase since the last flush (nothing when it did not move), histograms
//! as the values recorded since, gauges when set since the last flush and at least once a minute (a level
//! a dashboard reads per period, such as `relay_build_info`).
//!
//! Must never: write a document without the dimension values its directives name, or one metric name
//! twice in a document.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde::Serialize;
use serde_json::Value;

/// EMF's limits: metrics per directive, values per metric.
const MAX_METRICS: usize = 100;
const MAX_VALUES: usize = 100;
/// A gauge that did not change is written again after this long.
const GAUGE_REPEAT_MS: u64 = 60_000;

/// The recorder (install a clone with `metrics::set_global_recorder`) and the handle that flushes it.
#[derive(Clone)]
pub struct Emf {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: &'static str,
    /// The dimension on every metric, with its value (`env`).
    dimension: (&'static str, String),
    /// By key: a hash map, as a key carries its hash (registering the router's handles into a B-tree
    /// compared keys label by label, 0.6 M instructions of every Lambda init).
    series: Mutex<HashMap<Key, Cell>>,
    units: Mutex<HashMap<String, &'static str>>,
    /// Members of every document that are not metrics (the invocation's request id).
    properties: Mutex<BTreeMap<&'static str, String>>,
}

#[derive(Clone)]
enum Cell {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistogramCell>),
}

#[derive(Default)]
struct CounterCell(AtomicU64);

#[derive(Default)]
struct GaugeCell {
    bits: AtomicU64,
    changed: AtomicBool,
    /// Set at least once: a gauge that never was has no value to write.
    set: AtomicBool,
    /// When it was last written, in ms since the epoch (0: never).
    written_ms: AtomicU64,
}

#[derive(Default)]
struct HistogramCell(Mutex<Vec<f64>>);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
        self.changed.store(true, Ordering::Relaxed);
        self.set.store(true, Ordering::Relaxed);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        lock(&self.0).push(value);
    }
}

/// One metric's values of this flush, with its labels.
struct Sample {
    name: String,
    unit: Option<&'static str>,
    labels: Vec<(String, String)>,
    value: Value,
}

/// The samples one document carries, and the dimension values they fix.
#[derive(Default)]
struct Pack<'a> {
    dimensions: BTreeMap<&'a str, &'a str>,
    names: BTreeSet<&'a str>,
    samples: Vec<&'a Sample>,
}

impl<'a> Pack<'a> {
    fn accepts(&self, sample: &Sample) -> bool {
        self.samples.len() < MAX_METRICS
            && !self.names.contains(sample.name.as_str())
            && sample.labels.iter().all(|(k, v)| {
                self.dimensions
                    .get(k.as_str())
                    .is_none_or(|held| *held == v.as_str())
            })
    }

    fn add(&mut self, sample: &'a Sample) {
        for (k, v) in &sample.labels {
            self.dimensions.insert(k, v);
        }
        self.names.insert(&sample.name);
        self.samples.push(sample);
    }
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "_aws")]
    aws: AwsMember<'a>,
    #[serde(flatten)]
    members: BTreeMap<&'a str, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AwsMember<'a> {
    timestamp: u64,
    cloud_watch_metrics: Vec<Directive<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    namespace: &'a str,
    dimensions: [Vec<&'a str>; 1],
    metrics: Vec<MetricName<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricName<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

impl Emf {
    /// A recorder for `namespace`, with `dimension` (name, value) on every metric.
    pub fn new(namespace: &'static str, dimension: (&'static str, String)) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace,
                dimension,
                series: Mutex::default(),
                units: Mutex::default(),
                properties: Mutex::default(),
            }),
        }
    }

    fn register(&self, key: &Key, make: impl FnOnce() -> Cell) -> Cell {
        lock(&self.inner.series)
            .entry(key.clone())
            .or_insert_with(make)
            .clone()
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit.and_then(unit_name) {
            lock(&self.inner.units).insert(key.as_str().to_owned(), unit);
        }
    }

    /// Write `value` as member `name` of every document from now on (the invocation's request id).
    pub fn set_property(&self, name: &'static str, value: &str) {
        lock(&self.inner.properties).insert(name, value.to_owned());
    }

    /// Append what was recorded since the last flush to `out`, as EMF documents (one line each).
    /// Appends nothing when nothing was recorded.
    pub fn flush(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.flush_at(out, now_ms())
    }

    fn flush_at(&self, out: &mut Vec<u8>, now_ms: u64) -> serde_json::Result<()> {
        let samples = self.take_samples(&lock(&self.inner.units), now_ms);
        let properties = lock(&self.inner.properties);
        let mut packs: Vec<Pack<'_>> = Vec::new();
        for sample in &samples {
            match packs.iter_mut().find(|p| p.accepts(sample)) {
                Some(pack) => pack.add(sample),
                None => {
                    let mut pack = Pack::default();
                    pack.add(sample);
                    packs.push(pack);
                }
            }
        }
        for pack in &packs {
            serde_json::to_writer(&mut *out, &self.document(pack, &properties, now_ms))?;
            out.push(b'\n');
        }
        Ok(())
    }

    fn document<'a>(
        &'a self,
        pack: &'a Pack<'a>,
        properties: &'a BTreeMap<&'static str, String>,
        now_ms: u64,
    ) -> Document<'a> {
        let (dimension, value) = (&self.inner.dimension.0, &self.inner.dimension.1);
        let mut by_label_set: BTreeMap<Vec<&str>, Vec<MetricName<'_>>> = BTreeMap::new();
        let mut members: BTreeMap<&str, Value> = BTreeMap::new();
        for (k, v) in properties {
            members.insert(k, Value::from(v.as_str()));
        }
        for (k, v) in &pack.dimensions {
            members.insert(k, Value::from(*v));
        }
        members.insert(dimension, Value::from(value.as_str()));
        for sample in &pack.samples {
            let keys = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
            by_label_set.entry(keys).or_default().push(MetricName {
                name: &sample.name,
                unit: sample.unit,
            });
            members.insert(&sample.name, sample.value.clone());
        }
        let directives = by_label_set
            .into_iter()
            .map(|(keys, metrics)| Directive {
                namespace: self.inner.namespace,
                dimensions: [std::iter::once(*dimension).chain(keys).collect()],
                metrics,
            })
            .collect();
        Document {
            aws: AwsMember {
                timestamp: now_ms,
                cloud_watch_metrics: directives,
            },
            members,
        }
    }

    /// Every series with something to write, reset for the next flush. A histogram with more values
    /// than one metric may hold gives one sample per chunk (they land in separate documents).
    fn take_samples(&self, units: &HashMap<String, &'static str>, now_ms: u64) -> Vec<Sample> {
        let series = lock(&self.inner.series);
        let mut samples = Vec::new();
        for (key, cell) in series.iter() {
            let values: Vec<Value> = match cell {
                Cell::Counter(c) => match c.0.swap(0, Ordering::Relaxed) {
                    0 => continue,
                    n => vec![Value::from(n)],
                },
                Cell::Gauge(g) => {
                    let changed = g.changed.swap(false, Ordering::Relaxed);
                    let due = now_ms.saturating_sub(g.written_ms.load(Ordering::Relaxed))
                        >= GAUGE_REPEAT_MS;
                    if !g.set.load(Ordering::Relaxed) || (!changed && !due) {
                        continue;
                    }
                    g.written_ms.store(now_ms, Ordering::Relaxed);
                    vec![Value::from(f64::from_bits(g.bits.load(Ordering::Relaxed)))]
                }
                Cell::Histogram(h) => {
                    let recorded = std::mem::take(&mut *lock(&h.0));
                    recorded
                        .chunks(MAX_VALUES)
                        .map(|chunk| Value::from(chunk.to_vec()))
                        .collect()
                }
            };
            for value in values {
                samples.push(Sample {
                    name: key.name().to_owned(),
                    unit: units.get(key.name()).copied(),
                    labels: key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    value,
                });
            }
        }
        // In key order, as documents are packed first-fit: the same samples make the same documents.
        samples.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        samples
    }
}

impl Recorder for Emf {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.register(key, || Cell::Counter(Arc::default())) {
            Cell::Counter(cell) => Counter::from_arc(cell),
            _ => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.register(key, || Cell::Gauge(Arc::default())) {
            Cell::Gauge(cell) => Gauge::from_arc(cell),
            _ => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.register(key, || Cell::Histogram(Arc::default())) {
            Cell::Histogram(cell) => Histogram::from_arc(cell),
            _ => Histogram::noop(),
        }
    }
}

/// A lock that a panic elsewhere does not poison for good: every value here stays consistent on its own.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// CloudWatch's name for a unit. Counts are written without one (CloudWatch's default, `None`): 15
/// bytes a metric on every invocation, and no dashboard or alarm selects by unit.
fn unit_name(unit: Unit) -> Option<&'static str> {
    Some(match unit {
        Unit::Count => return None,
        Unit::Percent => "Percent",
        Unit::Seconds => "Seconds",
        Unit::Milliseconds => "Milliseconds",
        Unit::Microseconds => "Microseconds",
        Unit::Bytes => "Bytes",
        _ => return None,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn documents(emf: &Emf, now_ms: u64) -> Vec<Value> {
        let mut out = Vec::new();
        emf.flush_at(&mut out, now_ms).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn recorder() -> Emf {
        let emf = Emf::new("Relay", ("env", "prod".to_owned()));
        emf.set_property("RequestId", "r-1");
        emf
    }

    /// Every directive's dimensions are members of the document, every metric has its value.
    fn assert_well_formed(doc: &Value) {
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], "Relay");
            for dimension in directive["Dimensions"][0].as_array().unwrap() {
                assert!(doc[dimension.as_str().unwrap()].is_string(), "{doc}");
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                assert!(!doc[metric["Name"].as_str().unwrap()].is_null(), "{doc}");
            }
        }
    }

    #[test]
    fn one_invocations_label_sets_share_one_document() {
        let emf = recorder();
        emf.describe(KeyName::from("requests_total"), Some(Unit::Count));
        emf.describe(KeyName::from("duration_seconds"), Some(Unit::Seconds));
        let key = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            Key::from_parts(
                name,
                labels
                    .iter()
                    .map(|(k, v)| metrics::Label::new(*k, *v))
                    .collect::<Vec<_>>(),
            )
        };
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        emf.register_counter(
            &key(
                "requests_total",
                &[("route", "/m"), ("status_class", "2xx")],
            ),
            &meta,
        )
        .increment(1);
        emf.register_histogram(&key("duration_seconds", &[("route", "/m")]), &meta)
            .record(0.002);
        emf.register_histogram(&key("store_seconds", &[("op", "get")]), &meta)
            .record(0.001);
        emf.register_counter(&key("created_total", &[]), &meta)
            .increment(2);
        let _idle = emf.register_counter(&key("idle_total", &[]), &meta);

        let docs = documents(&emf, 1_000);
        assert_eq!(docs.len(), 1, "{docs:?}");
        let doc = &docs[0];
        assert_well_formed(doc);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(),
            4
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_000);
        assert_eq!(doc["RequestId"], "r-1");
        assert_eq!(doc["env"], "prod");
        assert_eq!(doc["requests_total"], 1);
        assert_eq!(doc["created_total"], 2);
        assert_eq!(doc["duration_seconds"], serde_json::json!([0.002]));
        let units: Vec<&Value> = doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["Metrics"].as_array().unwrap())
            .filter_map(|m| m.get("Unit"))
            .collect();
        assert_eq!(units, [&Value::from("Seconds")]);
        assert!(
            doc.get("idle_total").is_none(),
            "a counter that did not move"
        );
        let directive = doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["Metrics"][0]["Name"] == "requests_total")
            .unwrap();
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["env", "route", "status_class"]])
        );
        assert!(
            directive["Metrics"][0].get("Unit").is_none(),
            "counts carry no unit"
        );

        assert!(documents(&emf, 2_000).is_empty(), "nothing new: nothing");
    }

    #[test]
    fn conflicting_label_values_and_long_histograms_take_more_documents() {
        let emf = recorder();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        for op in ["get", "sweep"] {
            let key = Key::from_parts("store_seconds", vec![metrics::Label::new("op", op)]);
            emf.register_histogram(&key, &meta).record(0.5);
        }
        let docs = documents(&emf, 1);
        assert_eq!(docs.len(), 2, "one value of `op` per document: {docs:?}");
        let ops: BTreeSet<_> = docs.iter().map(|d| d["op"].to_string()).collect();
        assert_eq!(ops.len(), 2);
        docs.iter().for_each(assert_well_formed);

        let long = emf.register_histogram(&Key::from_name("latency"), &meta);
        (0..250).for_each(|i| long.record(f64::from(i)));
        let docs = documents(&emf, 2);
        let lengths: Vec<usize> = docs
            .iter()
            .map(|d| d["latency"].as_array().unwrap().len())
            .collect();
        assert_eq!(lengths, [100, 100, 50]);
    }

    #[test]
    fn gauges_are_written_when_set_and_once_a_minute() {
        let emf = recorder();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let info = Key::from_parts("build_info", vec![metrics::Label::new("version", "1")]);
        emf.register_gauge(&info, &meta).set(1.0);
        assert_eq!(documents(&emf, 100_000)[0]["build_info"], 1.0);
        assert!(
            documents(&emf, 130_000).is_empty(),
            "unchanged within a minute"
        );
        assert_eq!(documents(&emf, 160_000).len(), 1, "again after a minute");
        emf.register_gauge(&info, &meta).set(2.0);
        assert_eq!(documents(&emf, 161_000)[0]["build_info"], 2.0, "changed");
        let _never_set = emf.register_gauge(&Key::from_name("idle"), &meta);
        assert!(
            documents(&emf, 300_000)
                .iter()
                .all(|d| d.get("idle").is_none())
        );
    }
}
