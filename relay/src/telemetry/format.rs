//! The JSON log line format: one flat object per event, with the fixed fields every line carries
//! (`timestamp`, `level`, `target`, `service`, `version`, `env`), the fields of every enclosing span
//! (so `request_id`, `method`, `route` appear on each line of a request), and the event's own fields.
//!
//! Flat, not nested: Logs Insights and jq queries read `request_id`, not `span.request_id`.
//! Must never: drop a field silently, or emit anything but exactly one line per event.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields every line carries.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: &'static str,
    pub version: &'static str,
    pub env: String,
}

pub struct JsonLines {
    identity: Identity,
}

impl JsonLines {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
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
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        line.insert(
            "service".into(),
            Value::String(self.identity.service.to_owned()),
        );
        line.insert(
            "version".into(),
            Value::String(self.identity.version.to_owned()),
        );
        line.insert("env".into(), Value::String(self.identity.env.clone()));
        // Outermost span first, so an inner span's field wins over an outer one of the same name.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) =
                    serde_json::from_str::<Value>(fields.fields.as_str())
                {
                    line.extend(map);
                }
            }
        }
        let mut visitor = FieldsVisitor(&mut line);
        event.record(&mut visitor);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collect an event's fields into the line, keeping numbers and booleans typed.
struct FieldsVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}
