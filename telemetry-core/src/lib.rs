//! telemetry-core: the one shape of a relayops log line, shared by the relay (server and Lambda) and the
//! canary (CLI and Lambda), so every runbook query reads the same fields everywhere.
//!
//! [`JsonLayer`] is a `tracing_subscriber::Layer` that writes each event as one flat JSON object on one
//! line, in this order:
//! 1. the line's own members: `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`, then the
//!    [`Identity`]: `service`, `version`, `env`;
//! 2. the fields of every span the event is in, outermost span first (a request span's `request_id`,
//!    `method`, `route`, ...);
//! 3. the event's own fields (`message`, `status`, `latency_ms`, ...).
//!
//! Flat, not nested: Logs Insights and jq read `request_id`, not `span.request_id`. A key appears once per
//! line: the line's own members win, then the event's fields, then the innermost span's (a field of an
//! inner span replaces an outer one's value, in the outer one's place). Strings and numbers are written by
//! serde_json; keys are written as they are named. A span's fields are rendered once, when the span is
//! made or recorded, and copied into each line; a line is built in a per-thread buffer and handed to the
//! writer in one `write_all`, so lines from other threads never land inside it.
//!
//! Must never: write a key twice in one line, split a line across writes, or write anything but exactly
//! one line per event.

pub mod strict;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::ops::Range;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Who wrote a line: on every line, after `timestamp`, `level` and `target`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `relay` or `healthcheck`.
    pub service: &'static str,
    pub version: &'static str,
    /// `local`, `dev`, `prod`, ...
    pub env: String,
}

/// The members every line carries, in this order; no span or event field can replace them.
pub const LINE_MEMBERS: [&str; 6] = ["timestamp", "level", "target", "service", "version", "env"];

/// The layer that writes every event as one JSON line (see the crate docs).
pub struct JsonLayer<W> {
    /// `,"service":…,"version":…,"env":…`, rendered once.
    identity: Vec<u8>,
    writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(identity: &Identity, writer: W) -> Self {
        let mut members = Vec::new();
        for (key, value) in [
            ("service", identity.service),
            ("version", identity.version),
            ("env", identity.env.as_str()),
        ] {
            push_key(&mut members, key);
            push_json(&mut members, value);
        }
        Self {
            identity: members,
            writer,
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields.visitor(&mut String::new()));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
            values.record(&mut fields.visitor(&mut String::new()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        with_buffers(|buffers| {
            let Buffers {
                line,
                event: own,
                spans,
                text,
            } = buffers;
            event.record(&mut own.visitor(text));
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    if let Some(fields) = span.extensions().get::<Fields>() {
                        for (key, value) in fields.iter() {
                            spans.set(key, |json| json.extend_from_slice(value));
                        }
                    }
                }
            }
            let meta = event.metadata();
            line.extend_from_slice(br#"{"timestamp":""#);
            let _ = write!(
                line,
                "{}",
                humantime::format_rfc3339_micros(SystemTime::now())
            );
            line.extend_from_slice(br#"","level":""#);
            line.extend_from_slice(meta.level().as_str().as_bytes());
            line.push(b'"');
            push_key(line, "target");
            push_json(line, meta.target());
            line.extend_from_slice(&self.identity);
            for (key, value) in spans.iter() {
                if !own.contains(key) {
                    push_member(line, key, value);
                }
            }
            for (key, value) in own.iter() {
                push_member(line, key, value);
            }
            line.extend_from_slice(b"}\n");
            // Nowhere to report a failed log write; the program goes on.
            let _ = self.writer.make_writer_for(meta).write_all(line);
        });
    }
}

/// `,"key":value`, unless `key` is one of the line's own members.
fn push_member(line: &mut Vec<u8>, key: &str, value: &[u8]) {
    if !LINE_MEMBERS.contains(&key) {
        push_key(line, key);
        line.extend_from_slice(value);
    }
}

/// What one line is built in, kept per thread and emptied for each line.
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    event: Fields,
    spans: Fields,
    /// For `Debug` values, formatted before serde_json escapes them.
    text: String,
}

/// Run `f` on this thread's buffers, emptied; on fresh ones if logging re-enters itself (a `Debug`
/// implementation that logs).
fn with_buffers(f: impl FnOnce(&mut Buffers)) {
    thread_local! {
        static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
    }
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            buffers.line.clear();
            buffers.event.clear();
            buffers.spans.clear();
            f(&mut buffers);
        }
        Err(_) => f(&mut Buffers::default()),
    });
}

/// Field values as JSON, by key, in the order the keys were first set; setting a key again replaces
/// its value in place. A span keeps its fields here (in its extensions); a line collects its event's.
#[derive(Debug, Default)]
pub struct Fields {
    json: Vec<u8>,
    entries: Vec<(&'static str, Range<usize>)>,
}

impl Fields {
    fn clear(&mut self) {
        self.json.clear();
        self.entries.clear();
    }

    fn contains(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// Set `key` to the JSON that `write` appends.
    fn set(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.json.len();
        write(&mut self.json);
        let range = start..self.json.len();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = range,
            None => self.entries.push((key, range)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.entries
            .iter()
            .map(|(key, range)| (*key, self.json.get(range.clone()).unwrap_or_default()))
    }

    fn visitor<'a>(&'a mut self, text: &'a mut String) -> FieldVisitor<'a> {
        FieldVisitor { fields: self, text }
    }
}

/// Records a span's or an event's fields into [`Fields`], keeping numbers and booleans typed.
struct FieldVisitor<'a> {
    fields: &'a mut Fields,
    text: &'a mut String,
}

impl FieldVisitor<'_> {
    fn json<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        self.fields.set(field.name(), |json| push_json(json, value));
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.json(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.json(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.json(field, &value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.json(field, &value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.json(field, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.json(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.json(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text.clear();
        let _ = write!(self.text, "{value}");
        let text = std::mem::take(self.text);
        self.json(field, text.as_str());
        *self.text = text;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text.clear();
        let _ = write!(self.text, "{value:?}");
        let text = std::mem::take(self.text);
        self.json(field, text.as_str());
        *self.text = text;
    }
}

/// `,"key":` (every key follows at least the timestamp, so always with its comma).
fn push_key(line: &mut Vec<u8>, key: &str) {
    line.push(b',');
    push_json(line, key);
    line.push(b':');
}

fn push_json<T: serde::Serialize + ?Sized>(line: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *line, value).is_err() {
        line.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects what the layer writes, one `write_all` per element.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<String> {
        let sink = Sink::default();
        let identity = Identity {
            service: "relay",
            version: "9.9.9",
            env: "env \"quoted\"".into(),
        };
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(&identity, sink.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let writes = sink.0.lock().unwrap().clone();
        writes
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn a_line_is_one_flat_object_in_one_write_with_the_documented_order() {
        let lines = capture(|| {
            let span = tracing::info_span!("request", request_id = "r-1", route = "/messages/{id}");
            let _entered = span.enter();
            tracing::info!(
                message = "Request finished.",
                status = 200u16,
                latency_ms = 1.25
            );
        });
        assert_eq!(lines.len(), 1, "one write per line: {lines:?}");
        let line = &lines[0];
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let members = strict::parse_object(line).unwrap();
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "target",
                "service",
                "version",
                "env",
                "request_id",
                "route",
                "message",
                "status",
                "latency_ms"
            ]
        );
        let value = |key: &str| members.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("env"), "env \"quoted\"");
        assert_eq!(value("status"), 200);
        assert_eq!(value("latency_ms"), 1.25);
        assert_eq!(value("level"), "INFO");
        let timestamp = value("timestamp");
        let at = humantime::parse_rfc3339(timestamp.as_str().unwrap()).unwrap();
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age.as_secs() < 60, "{timestamp}");
    }

    #[test]
    fn a_key_appears_once_event_beats_span_and_inner_beats_outer() {
        let lines = capture(|| {
            let outer =
                tracing::info_span!("request", request_id = "r-1", route = "/a", op = "outer");
            let _outer = outer.enter();
            let inner = tracing::info_span!("store", op = "inner", backend = "sqlite");
            let _inner = inner.enter();
            tracing::info!(
                message = "x",
                backend = "from-event",
                level = "shadow",
                env = "shadow"
            );
        });
        let members = strict::parse_object(&lines[0]).expect("no duplicate keys");
        let value = |key: &str| members.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("op"), "inner", "inner span beats outer");
        assert_eq!(value("backend"), "from-event", "event beats span");
        assert_eq!(value("level"), "INFO", "the line's own members win");
        assert_eq!(value("env"), "env \"quoted\"");
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys[6..],
            ["request_id", "route", "op", "message", "backend"],
            "outer span's place kept for its replaced field"
        );
    }

    #[test]
    fn values_are_escaped_and_typed_by_serde_json_and_recorded_fields_replace_empty_ones() {
        let text = "quote \" backslash \\ newline \n control \u{1} é ✓ 😀";
        let lines = capture(|| {
            let span = tracing::info_span!("request", problem = tracing::field::Empty, n = 1u64);
            let _entered = span.enter();
            tracing::info!(message = text, debug = ?text, flag = true, big = u128::MAX, neg = -3i64);
            span.record("problem", "message-not-found");
            span.record("n", 2u64);
            tracing::warn!("formatted {}", 42);
            tracing::info!(nan = f64::NAN);
        });
        assert_eq!(lines.len(), 3);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["message"], text);
        assert_eq!(first["debug"], format!("{text:?}"));
        assert_eq!(first["flag"], true);
        assert_eq!(first["neg"], -3);
        assert!(
            lines[0].contains(&format!(r#""big":{}"#, u128::MAX)),
            "{}",
            lines[0]
        );
        assert!(
            first.get("problem").is_none(),
            "an empty field is not written"
        );
        assert_eq!(first["n"], 1);
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["message"], "formatted 42");
        assert_eq!(second["problem"], "message-not-found");
        assert_eq!(second["n"], 2);
        assert_eq!(second["level"], "WARN");
        strict::parse_object(&lines[1]).unwrap();
        let third: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(third["nan"], serde_json::Value::Null);
    }

    #[test]
    fn lines_of_concurrent_threads_never_mix() {
        let lines = capture(|| {
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::scope(|scope| {
                for t in 0..4 {
                    let dispatch = dispatch.clone();
                    scope.spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            let span = tracing::info_span!("request", request_id = t);
                            let _entered = span.enter();
                            for i in 0..200 {
                                tracing::info!(message = "line", i, thread = t);
                            }
                        });
                    });
                }
            });
        });
        assert_eq!(lines.len(), 800);
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["request_id"], value["thread"], "{line}");
        }
    }
}
