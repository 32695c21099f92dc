//! The JSON log line format: one flat object per event, with the fixed fields every line carries
//! (`timestamp`, `level`, `target`, `service`, `version`, `env`), the fields of every enclosing span
//! (so `request_id`, `method`, `route` appear on each line of a request), and the event's own fields.
//!
//! Flat, not nested: Logs Insights and jq queries read `request_id`, not `span.request_id`.
//! Must never: drop a field silently, or emit anything but exactly one line per event.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields every line carries.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: &'static str,
    pub version: &'static str,
    pub env: String,
}

pub struct JsonLines {
    /// `"service":…,"version":…,"env":…`, serialized once.
    identity: String,
}

impl JsonLines {
    pub fn new(identity: Identity) -> Self {
        let mut fixed = Vec::new();
        for (key, value) in [
            ("service", identity.service),
            ("version", identity.version),
            ("env", identity.env.as_str()),
        ] {
            push_key(&mut fixed, key);
            push_json(&mut fixed, value);
        }
        Self {
            identity: String::from_utf8(fixed).unwrap_or_default(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Written straight into one buffer: this runs for every request, so no intermediate map and no
        // re-parsing of span fields (they are already JSON objects; their members are spliced in). The
        // buffer is reused per thread (a fresh one only if formatting ever re-enters itself).
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write_line(ctx, event, &mut line);
                writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
            }
            Err(_) => {
                let mut line = Vec::with_capacity(512);
                self.write_line(ctx, event, &mut line);
                writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
            }
        })
    }
}

impl JsonLines {
    fn write_line<S, N>(&self, ctx: &FmtContext<'_, S, N>, event: &Event<'_>, line: &mut Vec<u8>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    {
        let meta = event.metadata();
        line.push(b'{');
        line.extend_from_slice(b"\"timestamp\":\"");
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let _ = std::io::Write::write_fmt(line, format_args!("{now}"));
        line.push(b'"');
        push_key(line, "level");
        push_json(line, meta.level().as_str());
        push_key(line, "target");
        push_json(line, meta.target());
        line.extend_from_slice(self.identity.as_bytes());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonMembers>>() else {
                    continue;
                };
                // Each member is written with its leading comma (see `JsonMembers`).
                line.extend_from_slice(fields.fields.as_bytes());
            }
        }
        event.record(&mut FieldsVisitor(line));
        line.extend_from_slice(b"}\n");
    }
}

/// Span fields as JSON object members, each with its leading comma (`,"request_id":"…","method":"GET"`),
/// formatted once when the span is created or recorded and spliced into every line logged inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonMembers;

impl<'writer> FormatFields<'writer> for JsonMembers {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Vec::with_capacity(128);
        fields.record(&mut FieldsVisitor(&mut members));
        writer.write_str(std::str::from_utf8(&members).map_err(|_| fmt::Error)?)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Vec::with_capacity(64);
        fields.record(&mut FieldsVisitor(&mut members));
        current
            .fields
            .push_str(std::str::from_utf8(&members).map_err(|_| fmt::Error)?);
        Ok(())
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

/// Write an event's fields into the line, keeping numbers and booleans typed.
struct FieldsVisitor<'a>(&'a mut Vec<u8>);

impl Visit for FieldsVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        push_key(self.0, field.name());
        if value.is_finite() {
            push_json(self.0, &value);
        } else {
            self.0.extend_from_slice(b"null");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        push_key(self.0, field.name());
        push_json(self.0, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        push_key(self.0, field.name());
        push_json(self.0, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        push_key(self.0, field.name());
        push_json(self.0, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        push_key(self.0, field.name());
        push_json(self.0, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        push_key(self.0, field.name());
        push_json(self.0, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        push_key(self.0, field.name());
        push_json(self.0, &format!("{value:?}"));
    }
}
