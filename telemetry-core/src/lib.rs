//! telemetry-core: the one shape of a relayops log line, shared by the relay (server and Lambda) and the
//! canary (CLI and Lambda), so every runbook query reads the same fields everywhere.
//!
//! [`JsonLayer`] is a `tracing_subscriber::Layer` that writes each event as one flat JSON object on one
//! line, in this order:
//! 1. the line's own members: `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`, then the
//!    [`Identity`]: `service`, `version`, `env`;
//! 2. the event's own fields (`message`, `status`, `latency_ms`, ...);
//! 3. the fields of every span the event is in, innermost span first (a store call's span, then the
//!    request span's `request_id`, `method`, `route`, ...).
//!
//! Flat, not nested: Logs Insights and jq read `request_id`, not `span.request_id`. A key appears once per
//! line, the first one written wins: the line's own members, then the event's fields, then the
//! innermost span's. Keys are written as they are named in the code (field names need no escaping);
//! string values are copied as they are when JSON needs no escape in them, and otherwise written by
//! serde_json, as are numbers. A span's fields are rendered once, as ready-made members, when the span
//! is made or recorded, and copied into each line inside it; an event's fields are written straight
//! into its line. A line is built in a per-thread buffer and handed to the writer in one `write_all`,
//! so lines from other threads never land inside it.
//!
//! Below the output filter ([`JsonLayer::below_output`]): the subscriber's filter lets lines through
//! that the output filter would not, and the layer decides what becomes of them:
//! - inside a sampled span (its field [`SAMPLED`] is `true`), they are written;
//! - inside any other span, with [`Buffering`] and at its level or above, they are kept in a bounded
//!   buffer of the outermost span (the request's), oldest evicted first. An event whose field [`FLUSH`]
//!   is `true` (the request line of a failed or slow request) writes that buffer out, in order and
//!   before its own line, all in one write; when evictions dropped lines, one WARN line before the
//!   buffered ones says how many. A buffer no event flushes is dropped with its span. A kept line
//!   is held as what only it knows (its time, level, target and its own and inner spans' members)
//!   and written whole by the flush, with the outermost span's fields as they are then: a request
//!   that succeeds pays for recording its debug lines, not for writing them;
//! - elsewhere, they are dropped.
//!
//! [`otel`] (feature `otel`) exports spans over OTLP when an endpoint is configured.
//!
//! [`trace`] reads and makes the W3C trace context ids that join a request's lines to its trace.
//!
//! [`paced`] is where a long-running server hands its lines: a shared buffer written out by a thread
//! of its own, so request threads never wait on stdout.
//!
//! Must never: write a key twice in one line, split a line across writes, write anything but exactly
//! one line per event (a buffered line is written once, by the flush, or never), or write a span's
//! buffered lines into another span's flush.

#[cfg(feature = "otel")]
pub mod otel;
pub mod paced;
pub mod strict;
pub mod trace;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::ops::Range;
use std::time::SystemTime;

use smallvec::SmallVec;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Scope, SpanRef};

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

/// The span field that marks a sampled span (see the crate docs).
pub const SAMPLED: &str = "sampled";

/// The event field that writes out the buffered lines of the event's outermost span (see the crate
/// docs).
pub const FLUSH: &str = "flush_buffer";

/// How lines below the output filter are kept until a flush (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// The most verbose level kept (`DEBUG` keeps debug lines, not trace ones).
    pub level: LevelFilter,
    /// The most bytes of lines one span keeps; past that the oldest lines are evicted.
    pub max_bytes: usize,
}

/// The layer that writes every event as one JSON line (see the crate docs).
pub struct JsonLayer<W> {
    /// `,"service":…,"version":…,"env":…`, rendered once.
    identity: Vec<u8>,
    writer: W,
    below: Option<Below>,
}

/// What becomes of the lines the output filter would not write.
struct Below {
    output: Targets,
    buffering: Option<Buffering>,
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
            push_str(&mut members, value);
        }
        Self {
            identity: members,
            writer,
            below: None,
        }
    }

    /// Write the lines `output` does not enable only inside sampled spans, and with `buffering` keep
    /// them for a flush (see the crate docs).
    pub fn below_output(mut self, output: Targets, buffering: Option<Buffering>) -> Self {
        self.below = Some(Below { output, buffering });
        self
    }

    /// Render one line into `buffers.line` (empty): the head every line starts with (`{"timestamp":…,
    /// "level":…,"target":…` and the identity), the members `fields` sets, then the fields of the
    /// spans in `scope`, innermost first. Returns whether the fields asked for a flush ([`FLUSH`]).
    fn render<S: for<'a> LookupSpan<'a>>(
        &self,
        buffers: &mut Buffers,
        level: &Level,
        target: &str,
        fields: impl FnOnce(&mut FieldVisitor<'_>),
        scope: Option<Scope<'_, S>>,
    ) -> bool {
        self.push_head(buffers, SystemTime::now(), level, target);
        let Buffers {
            line, taken, text, ..
        } = buffers;
        let mut visitor = FieldVisitor {
            out: Members::Line { line, taken },
            text,
            flush: false,
        };
        fields(&mut visitor);
        let flush = visitor.flush;
        for span in scope.into_iter().flatten() {
            if let Some(fields) = span.extensions().get::<Fields>() {
                fields.write_members(line, taken);
            }
        }
        line.extend_from_slice(b"}\n");
        flush
    }

    /// `{"timestamp":…,"level":…,"target":…` and the identity, appended to `buffers.line`.
    fn push_head(&self, buffers: &mut Buffers, at: SystemTime, level: &Level, target: &str) {
        let line = &mut buffers.line;
        line.extend_from_slice(br#"{"timestamp":""#);
        push_timestamp(line, at, &mut buffers.second);
        line.extend_from_slice(br#"","level":""#);
        line.extend_from_slice(level.as_str().as_bytes());
        line.extend_from_slice(br#"","target":"#);
        push_str(line, target);
        line.extend_from_slice(&self.identity);
    }

    /// The most bytes a kept line with `members` of its own can take once written, with the
    /// members of its outermost span (`outer` bytes; fewer are written when the line has some of
    /// their keys itself).
    fn written_size(&self, level: &Level, target: &str, members: usize, outer: usize) -> usize {
        // Targets are module paths: no escapes (and serde_json's length when there are).
        let quoted = if needs_escape(target) {
            serde_json::to_string(target).map_or(target.len() + 2, |q| q.len())
        } else {
            target.len() + 2
        };
        // `{"timestamp":"` + 27 + `","level":"` + level + `","target":` + the quoted target,
        // the identity, the members, then `}\n`.
        14 + 27
            + 11
            + level.as_str().len()
            + 11
            + quoted
            + self.identity.len()
            + members
            + outer
            + 2
    }
}

/// Where a line below the output filter goes.
enum Fate<'a, S: for<'l> LookupSpan<'l>> {
    Write,
    /// Into the buffer of `span`, the event's outermost, which keeps at most `max_bytes`.
    Keep {
        span: SpanRef<'a, S>,
        /// The spans between the event and `span`, innermost first.
        inner: SmallVec<[SpanRef<'a, S>; 4]>,
        max_bytes: usize,
    },
    Drop,
}

/// A span's kept lines, oldest first (see the crate docs). A line is kept as what only it knows (when,
/// its level and target, its own and its inner spans' members, and their keys) and written whole by
/// the flush, with the outermost span's members as they are then: a request that succeeds never pays
/// for writing lines nobody reads.
#[derive(Debug)]
struct DebugBuffer {
    /// The lines' own members, one line after another.
    members: Vec<u8>,
    /// The keys of those members, one line after another, so the flush leaves them out of the
    /// outermost span's members (a key appears once per line).
    keys: Vec<&'static str>,
    /// The lines, oldest first (inline for the usual few).
    lines: SmallVec<[Kept; 8]>,
    /// What the kept lines take once written, at most: the bound `max_bytes` applies to.
    size: usize,
    /// The lines evicted (or too long to keep at all).
    dropped: u64,
}

/// One kept line.
#[derive(Debug)]
struct Kept {
    at: SystemTime,
    level: Level,
    target: &'static str,
    /// Bytes of `members`, and how many of `keys`, that are this line's.
    members: usize,
    keys: usize,
    /// What it takes once written, at most.
    size: usize,
}

impl DebugBuffer {
    fn new() -> Self {
        Self {
            members: Vec::new(),
            keys: Vec::new(),
            lines: SmallVec::new(),
            size: 0,
            dropped: 0,
        }
    }

    /// Keep a line: `members` and `keys` are its own, `kept.size` what it takes written.
    fn push(&mut self, kept: Kept, members: &[u8], keys: &[&'static str], max_bytes: usize) {
        if kept.size > max_bytes {
            self.dropped += 1;
            return;
        }
        // Evict the oldest lines that must go, in one move.
        let (mut evicted, mut freed, mut bytes, mut key_count) = (0, 0, 0, 0);
        while self.size - freed + kept.size > max_bytes {
            let Some(oldest) = self.lines.get(evicted) else {
                break;
            };
            freed += oldest.size;
            bytes += oldest.members;
            key_count += oldest.keys;
            evicted += 1;
        }
        if evicted > 0 {
            self.members.drain(..bytes);
            self.keys.drain(..key_count);
            self.lines.drain(..evicted);
            self.size -= freed;
            self.dropped += evicted as u64;
        }
        self.members.extend_from_slice(members);
        self.keys.extend_from_slice(keys);
        self.size += kept.size;
        self.lines.push(kept);
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
        let mut fields = Fields::for_span();
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
        let meta = event.metadata();
        let fate = match &self.below {
            Some(below) if !below.output.would_enable(meta.target(), meta.level()) => {
                below_fate(below.buffering, meta.level(), ctx.event_scope(event))
            }
            _ => Fate::Write,
        };
        if matches!(fate, Fate::Drop) {
            return;
        }
        if let Fate::Keep {
            span,
            inner,
            max_bytes,
        } = fate
        {
            return self.keep(event, &span, &inner, max_bytes);
        }
        with_buffers(|buffers| {
            let flush = self.render(
                buffers,
                meta.level(),
                meta.target(),
                |visitor| event.record(visitor),
                ctx.event_scope(event),
            );
            let outermost = flush
                .then(|| ctx.event_scope(event)?.from_root().next())
                .flatten();
            let kept = outermost
                .as_ref()
                .and_then(|span| span.extensions_mut().remove::<DebugBuffer>());
            // Nowhere to report a failed log write; the program goes on.
            let _ = match (kept, outermost) {
                (Some(kept), Some(outermost)) => {
                    let out = self.flushed(
                        kept,
                        &outermost,
                        meta,
                        ctx.event_scope(event),
                        &buffers.line,
                    );
                    self.writer.make_writer_for(meta).write_all(&out)
                }
                _ => self.writer.make_writer_for(meta).write_all(&buffers.line),
            };
        });
    }
}

impl<W> JsonLayer<W> {
    /// Keep `event` in `outermost`'s buffer: its own members and those of the `inner` spans
    /// (innermost first) between it and `outermost` (the flush adds the head and `outermost`'s
    /// members).
    fn keep<S: for<'a> LookupSpan<'a>>(
        &self,
        event: &Event<'_>,
        outermost: &SpanRef<'_, S>,
        inner: &[SpanRef<'_, S>],
        max_bytes: usize,
    ) {
        let meta = event.metadata();
        with_buffers(|buffers| {
            let Buffers {
                line, taken, text, ..
            } = buffers;
            event.record(&mut FieldVisitor {
                out: Members::Line { line, taken },
                text,
                flush: false,
            });
            for span in inner {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    fields.write_members(line, taken);
                }
            }
            let mut extensions = outermost.extensions_mut();
            let outer = extensions
                .get_mut::<Fields>()
                .map_or(0, |f| f.members.len());
            let kept = Kept {
                at: SystemTime::now(),
                level: *meta.level(),
                target: meta.target(),
                members: line.len(),
                keys: taken.len(),
                size: self.written_size(meta.level(), meta.target(), line.len(), outer),
            };
            match extensions.get_mut::<DebugBuffer>() {
                Some(buffer) => buffer.push(kept, line, taken, max_bytes),
                None => {
                    let mut buffer = DebugBuffer::new();
                    buffer.push(kept, line, taken, max_bytes);
                    extensions.insert(buffer);
                }
            }
        });
    }

    /// What a flush writes in one piece: the WARN line about evicted lines (if any were), the kept
    /// lines in order, each written whole now with `outermost`'s members, then the flushing event's
    /// own `line`.
    fn flushed<S: for<'a> LookupSpan<'a>>(
        &self,
        kept: DebugBuffer,
        outermost: &SpanRef<'_, S>,
        meta: &tracing::Metadata<'_>,
        scope: Option<Scope<'_, S>>,
        line: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(kept.size + line.len() + 512);
        let mut own = Buffers::default();
        if kept.dropped > 0 {
            let message = format!(
                "Debug buffer full: the {} oldest lines were dropped.",
                kept.dropped
            );
            self.render(
                &mut own,
                &Level::WARN,
                meta.target(),
                |visitor| {
                    visitor.out.set("message", |json| push_str(json, &message));
                    visitor
                        .out
                        .set("dropped_lines", |json| push_json(json, &kept.dropped));
                },
                scope,
            );
            out.extend_from_slice(&own.line);
        }
        let extensions = outermost.extensions();
        let outer = extensions.get::<Fields>();
        let (mut members, mut keys) = (&kept.members[..], &kept.keys[..]);
        for line in &kept.lines {
            own.line.clear();
            self.push_head(&mut own, line.at, &line.level, line.target);
            let (these, rest) = members.split_at(line.members.min(members.len()));
            own.line.extend_from_slice(these);
            members = rest;
            let (taken, rest) = keys.split_at(line.keys.min(keys.len()));
            keys = rest;
            if let Some(outer) = outer {
                own.taken.clear();
                own.taken.extend_from_slice(taken);
                outer.write_members(&mut own.line, &mut own.taken);
            }
            own.line.extend_from_slice(b"}\n");
            out.extend_from_slice(&own.line);
        }
        out.extend_from_slice(line);
        out
    }
}

/// The fate of a line the output filter would not write: written inside a sampled span; kept in the
/// outermost span's buffer with `buffering`, at its level or above; otherwise dropped.
fn below_fate<'a, S: for<'l> LookupSpan<'l>>(
    buffering: Option<Buffering>,
    level: &Level,
    scope: Option<Scope<'a, S>>,
) -> Fate<'a, S> {
    let mut spans: SmallVec<[SpanRef<'a, S>; 4]> = SmallVec::new();
    for span in scope.into_iter().flatten() {
        if span.extensions().get::<Fields>().is_some_and(|f| f.sampled) {
            return Fate::Write;
        }
        spans.push(span);
    }
    match (buffering, spans.pop()) {
        (Some(buffering), Some(span)) if *level <= buffering.level => Fate::Keep {
            span,
            inner: spans,
            max_bytes: buffering.max_bytes,
        },
        _ => Fate::Drop,
    }
}

/// A duration in milliseconds, to the microsecond: how every `*_ms` field of the relay and the canary
/// writes one.
pub fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// What one line is built in, kept per thread and emptied for each line.
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    /// The keys of the fields the line holds so far (never a line member: fields drop those).
    taken: Vec<&'static str>,
    /// For `Debug` values, formatted before they are escaped.
    text: String,
    /// The last second a timestamp was written for, and its text up to the second.
    second: (u64, [u8; 19]),
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
            buffers.taken.clear();
            f(&mut buffers);
        }
        Err(_) => f(&mut Buffers::default()),
    });
}

/// Whether a field named `key` is never written: it names one of the line's own members
/// ([`LINE_MEMBERS`]), which no field may replace, or it is one of tracing-opentelemetry's
/// instructions (`otel.name`, `otel.kind`, ...), which are for the exported span, not the line.
fn is_line_member(key: &str) -> bool {
    matches!(
        key,
        "timestamp" | "level" | "target" | "service" | "version" | "env"
    ) || key.starts_with("otel.")
}

/// Fields as ready-made JSON members (`,"key":value`), in the order they were set; setting a key again
/// replaces its member. `members` is always exactly the entries' members, in order, so a line copies
/// them in one piece when none of their keys is taken. A span keeps its fields here, in its
/// extensions.
#[derive(Debug, Default)]
pub struct Fields {
    members: Vec<u8>,
    /// Inline up to eight fields, so a span's fields cost one allocation besides its extension's.
    entries: SmallVec<[(&'static str, Range<usize>); 8]>,
    /// A sampled span's (its [`SAMPLED`] field is `true`).
    sampled: bool,
}

impl Fields {
    /// Room for a request span's fields without growing.
    fn for_span() -> Self {
        Self {
            members: Vec::with_capacity(192),
            entries: SmallVec::new(),
            sampled: false,
        }
    }

    /// Set `key` to the value that `write` appends; a key named like one of the line's own members is
    /// dropped here, since the line's member wins.
    fn set(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        if is_line_member(key) {
            return;
        }
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == key) {
            let (_, old) = self.entries.remove(at);
            let removed = old.len();
            self.members.drain(old);
            for (_, range) in &mut self.entries[at..] {
                *range = range.start - removed..range.end - removed;
            }
        }
        let start = self.members.len();
        push_key(&mut self.members, key);
        write(&mut self.members);
        self.entries.push((key, start..self.members.len()));
    }

    /// Append the members whose keys are not `taken` to `line`, and take their keys.
    fn write_members(&self, line: &mut Vec<u8>, taken: &mut Vec<&'static str>) {
        if !self.entries.iter().any(|(key, _)| taken.contains(key)) {
            line.extend_from_slice(&self.members);
            taken.extend(self.entries.iter().map(|(key, _)| *key));
            return;
        }
        for (key, range) in &self.entries {
            if !taken.contains(key) {
                line.extend_from_slice(&self.members[range.clone()]);
                taken.push(key);
            }
        }
    }

    fn visitor<'a>(&'a mut self, text: &'a mut String) -> FieldVisitor<'a> {
        FieldVisitor {
            out: Members::Span(self),
            text,
            flush: false,
        }
    }
}

/// Where a visitor's members go: a span's [`Fields`] (a key set again replaces its member), or
/// straight into an event's line (a key already there is left out: the first one written wins).
enum Members<'a> {
    Span(&'a mut Fields),
    Line {
        line: &'a mut Vec<u8>,
        taken: &'a mut Vec<&'static str>,
    },
}

impl Members<'_> {
    fn set(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        match self {
            Self::Span(fields) => fields.set(key, write),
            Self::Line { line, taken } => {
                if !is_line_member(key) && !taken.contains(&key) {
                    push_key(line, key);
                    write(line);
                    taken.push(key);
                }
            }
        }
    }
}

/// Records a span's or an event's fields as JSON members, keeping numbers and booleans typed.
struct FieldVisitor<'a> {
    out: Members<'a>,
    text: &'a mut String,
    /// An event's [`FLUSH`] field was `true`.
    flush: bool,
}

impl FieldVisitor<'_> {
    fn json<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        self.out.set(field.name(), |json| push_json(json, value));
    }

    /// A value shown by its `Display` or `Debug` text, as a JSON string.
    fn text(&mut self, field: &Field, format: impl FnOnce(&mut String)) {
        self.text.clear();
        format(self.text);
        let text = self.text.as_str();
        self.out.set(field.name(), |json| push_str(json, text));
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
        match &mut self.out {
            Members::Span(fields) if field.name() == SAMPLED => fields.sampled = value,
            Members::Line { .. } if field.name() == FLUSH => self.flush = value,
            _ => {}
        }
        self.json(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.out.set(field.name(), |json| push_str(json, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            let _ = write!(text, "{value:?}");
        });
    }
}

/// `now` in RFC 3339, UTC, to the microsecond (`2026-12-01T17:08:34.123456Z`). The text up to the second
/// comes from humantime, once per second per thread (`second` keeps it); the microseconds are appended.
fn push_timestamp(line: &mut Vec<u8>, now: SystemTime, second: &mut (u64, [u8; 19])) {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if second.0 != since_epoch.as_secs() || second.1[0] == 0 {
        let whole = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(since_epoch.as_secs());
        let text = humantime::format_rfc3339_seconds(whole).to_string();
        match text.as_bytes().get(..19) {
            Some(prefix) => second.1.copy_from_slice(prefix),
            None => return line.extend_from_slice(text.as_bytes()),
        }
        second.0 = since_epoch.as_secs();
    }
    let mut fraction = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line.extend_from_slice(&second.1);
    line.extend_from_slice(&fraction);
}

/// `,"key":`, the key as it is named (every key follows at least the timestamp, so always a comma).
fn push_key(line: &mut Vec<u8>, key: &str) {
    line.extend_from_slice(b",\"");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
}

/// A JSON string: copied between quotes when nothing in it needs an escape (a control character, `"`
/// or `\`), which is what serde_json would write too; otherwise written by serde_json.
fn push_str(line: &mut Vec<u8>, value: &str) {
    if !needs_escape(value) {
        line.reserve(value.len() + 2);
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
    } else {
        push_json(line, value);
    }
}

/// Whether JSON needs an escape in `value` (a control character, `"` or `\\`).
fn needs_escape(value: &str) -> bool {
    // A fold without an early exit, so the compiler checks many bytes per instruction.
    value.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
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
        capture_with(|layer| layer, f)
    }

    /// What a layer set up by `configure` writes while `f` runs, with no filter in front of it.
    fn capture_with(
        configure: impl FnOnce(JsonLayer<Sink>) -> JsonLayer<Sink>,
        f: impl FnOnce(),
    ) -> Vec<String> {
        let sink = Sink::default();
        let identity = Identity {
            service: "relay",
            version: "9.9.9",
            env: "env \"quoted\"".into(),
        };
        let layer = configure(JsonLayer::new(&identity, sink.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
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
                "message",
                "status",
                "latency_ms",
                "request_id",
                "route"
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
    fn a_key_appears_once_event_beats_span_and_inner_beats_outer_and_otel_fields_never() {
        let lines = capture(|| {
            let outer = tracing::info_span!(
                "request",
                request_id = "r-1",
                route = "/a",
                op = "outer",
                "otel.name" = "GET /a",
                "otel.kind" = "server"
            );
            let _outer = outer.enter();
            let inner = tracing::info_span!("store", op = "inner", backend = "sqlite");
            let _inner = inner.enter();
            tracing::info!(
                message = "x",
                backend = "from-event",
                timestamp = "shadow",
                level = "shadow",
                target = "shadow",
                service = "shadow",
                version = "shadow",
                env = "shadow",
                backend = "twice"
            );
        });
        let members = strict::parse_object(&lines[0]).expect("no duplicate keys");
        let value = |key: &str| members.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("op"), "inner", "inner span beats outer");
        assert_eq!(
            value("backend"),
            "from-event",
            "event beats span, first beats second"
        );
        for (key, value) in &members[..LINE_MEMBERS.len()] {
            assert_ne!(value, "shadow", "the line's own {key} wins");
        }
        assert_eq!(value("env"), "env \"quoted\"");
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys[6..],
            ["message", "backend", "op", "request_id", "route"],
            "event, then the inner span, then what the outer span adds (never `otel.*`)"
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
    fn lines_below_the_output_filter_are_written_only_inside_sampled_spans() {
        let output: Targets = "info".parse().unwrap();
        // No filter in front: every line reaches the layer, which alone decides.
        let lines = capture_with(
            |layer| layer.below_output(output, None),
            || {
                tracing::debug!(message = "outside any span");
                tracing::info_span!("request", request_id = "plain").in_scope(|| {
                    tracing::debug!(message = "in an unsampled span");
                    tracing::info!(message = "at the output level");
                });
                let sampled = tracing::error_span!("request", request_id = "s", sampled = true);
                sampled.in_scope(|| {
                    tracing::info_span!("store").in_scope(|| tracing::debug!(message = "sampled"));
                });
            },
        );
        let lines: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["at the output level", "sampled"]);
        assert_eq!(lines[1]["sampled"], true);
        assert_eq!(lines[1]["level"], "DEBUG");
    }

    fn buffering(max_bytes: usize) -> impl FnOnce(JsonLayer<Sink>) -> JsonLayer<Sink> {
        move |layer| {
            let buffering = Buffering {
                level: LevelFilter::DEBUG,
                max_bytes,
            };
            layer.below_output("info".parse().unwrap(), Some(buffering))
        }
    }

    fn parse_all(write: &str) -> Vec<serde_json::Value> {
        write
            .lines()
            .map(|line| {
                strict::parse_object(line).unwrap();
                serde_json::from_str(line).unwrap()
            })
            .collect()
    }

    fn messages(lines: &[serde_json::Value]) -> Vec<&str> {
        lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn kept_lines_are_written_in_order_before_the_flushing_line_and_only_by_a_flush() {
        let writes = capture_with(buffering(64 * 1024), || {
            tracing::debug!(message = "outside any span");
            tracing::error_span!("request", request_id = "ok").in_scope(|| {
                tracing::debug!(message = "kept, then dropped with its span");
                tracing::info!(message = "Request finished.", status = 200);
            });
            tracing::error_span!("request", request_id = "failed").in_scope(|| {
                tracing::debug!(message = "first");
                tracing::info_span!("store", op = "get_message").in_scope(|| {
                    tracing::debug!(message = "second");
                    tracing::trace!(message = "below the buffer's level");
                });
                tracing::info!(message = "written at once");
                tracing::error!(
                    message = "Request failed.",
                    status = 503,
                    flush_buffer = true
                );
            });
        });
        assert_eq!(
            writes.len(),
            3,
            "one write per written line, one per flush: {writes:?}"
        );
        assert_eq!(messages(&parse_all(&writes[0])), ["Request finished."]);
        assert_eq!(messages(&parse_all(&writes[1])), ["written at once"]);
        let flushed = parse_all(&writes[2]);
        assert_eq!(messages(&flushed), ["first", "second", "Request failed."]);
        for line in &flushed {
            assert_eq!(line["request_id"], "failed");
        }
        assert_eq!(flushed[0]["level"], "DEBUG");
        assert_eq!(
            flushed[1]["op"], "get_message",
            "a kept line keeps its spans' fields"
        );
        assert_eq!(flushed[2]["flush_buffer"], true);
    }

    #[test]
    fn a_kept_line_is_written_whole_by_the_flush_with_the_request_fields_then_and_no_key_twice() {
        let writes = capture_with(buffering(64 * 1024), || {
            let request = tracing::error_span!(
                "request",
                request_id = "r-2",
                route = "/a",
                problem = tracing::field::Empty
            );
            request.in_scope(|| {
                tracing::info_span!("store", op = "get_message", route = "inner").in_scope(|| {
                    tracing::debug!(message = "kept", route = "event");
                });
                tracing::debug!(message = "also kept");
                request.record("problem", "unavailable");
                std::thread::sleep(std::time::Duration::from_millis(2));
                tracing::error!(message = "Request failed.", flush_buffer = true);
            });
        });
        assert_eq!(writes.len(), 1);
        let lines = parse_all(&writes[0]);
        assert_eq!(messages(&lines), ["kept", "also kept", "Request failed."]);
        assert_eq!(lines[0]["route"], "event", "the event's own field wins");
        assert_eq!(lines[0]["op"], "get_message");
        assert_eq!(lines[1]["route"], "/a");
        for line in &lines {
            assert_eq!(
                line["problem"], "unavailable",
                "the request's fields as at the flush"
            );
            assert_eq!(line["request_id"], "r-2");
        }
        let first = strict::parse_object(writes[0].lines().next().unwrap()).unwrap();
        let keys: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys[..LINE_MEMBERS.len()],
            LINE_MEMBERS,
            "a kept line has the head of every line"
        );
        assert!(
            lines[1]["timestamp"].as_str() < lines[2]["timestamp"].as_str(),
            "a kept line has the time it was logged, not the flush's"
        );
    }

    #[test]
    fn a_full_buffer_evicts_the_oldest_lines_and_its_flush_says_how_many_in_one_warn_line() {
        let writes = capture_with(buffering(1024), || {
            tracing::error_span!("request", request_id = "r-9").in_scope(|| {
                for i in 0..40 {
                    tracing::debug!(message = "kept", i);
                }
                tracing::debug!(message = "x".repeat(2048));
                tracing::error!(
                    message = "Request failed.",
                    status = 500,
                    flush_buffer = true
                );
            });
        });
        assert_eq!(writes.len(), 1);
        let lines = parse_all(&writes[0]);
        let warn = &lines[0];
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["request_id"], "r-9");
        let kept: Vec<u64> = lines[1..lines.len() - 1]
            .iter()
            .map(|l| l["i"].as_u64().unwrap())
            .collect();
        let dropped = warn["dropped_lines"].as_u64().unwrap();
        assert_eq!(
            dropped,
            40 - kept.len() as u64 + 1,
            "evicted lines and the one too long to keep"
        );
        assert_eq!(
            warn["message"],
            format!("Debug buffer full: the {dropped} oldest lines were dropped.")
        );
        let newest: Vec<u64> = (40 - kept.len() as u64..40).collect();
        assert_eq!(kept, newest, "the newest lines are kept, in order");
        let kept_bytes: usize = writes[0]
            .lines()
            .skip(1)
            .take(kept.len())
            .map(|l| l.len() + 1)
            .sum();
        assert!(
            kept_bytes <= 1024 && kept.len() > 3,
            "{kept_bytes} bytes in {} lines",
            kept.len()
        );
        assert_eq!(lines.iter().filter(|l| l["level"] == "WARN").count(), 1);
    }

    #[test]
    fn concurrent_requests_flush_only_their_own_lines() {
        let writes = capture_with(buffering(64 * 1024), || {
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::scope(|scope| {
                for t in 0..8u64 {
                    let dispatch = dispatch.clone();
                    scope.spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            for r in 0..25u64 {
                                let id = t * 100 + r;
                                tracing::error_span!("request", request_id = id).in_scope(|| {
                                    for i in 0..5 {
                                        tracing::debug!(message = "step", i, owner = id);
                                    }
                                    tracing::error!(
                                        message = "Request failed.",
                                        flush_buffer = true
                                    );
                                });
                            }
                        });
                    });
                }
            });
        });
        assert_eq!(writes.len(), 200);
        for write in &writes {
            let lines = parse_all(write);
            assert_eq!(
                messages(&lines),
                ["step", "step", "step", "step", "step", "Request failed."]
            );
            for line in &lines[..5] {
                assert_eq!(line["owner"], line["request_id"], "{write}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_within_and_across_seconds() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let mut second = (0, [0; 19]);
        for offset in [0, 1, 999_999, 1_000_000, 59_123_456, 86_400_000_007, 5] {
            let at = base + std::time::Duration::from_micros(offset);
            let mut line = Vec::new();
            push_timestamp(&mut line, at, &mut second);
            let expected = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(String::from_utf8(line).unwrap(), expected);
        }
    }

    #[test]
    fn strings_are_written_exactly_as_serde_json_writes_them() {
        let mut texts: Vec<String> = (0..=0x7f_u8).map(|b| format!("a{}b", b as char)).collect();
        texts.extend(
            [
                "",
                "plain",
                "/messages/{id}",
                "é ✓ 😀",
                "\u{7f}\u{80}\u{2028}",
            ]
            .map(String::from),
        );
        for text in &texts {
            let mut ours = Vec::new();
            push_str(&mut ours, text);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    #[test]
    fn a_field_recorded_again_replaces_its_member() {
        let mut fields = Fields::for_span();
        fields.set("a", |j| j.extend_from_slice(b"1"));
        fields.set("b", |j| j.extend_from_slice(b"22"));
        fields.set("c", |j| j.extend_from_slice(b"3"));
        fields.set("a", |j| j.extend_from_slice(b"444"));
        assert_eq!(fields.members, br#","b":22,"c":3,"a":444"#);
        let mut line = Vec::new();
        let mut taken = vec!["c"];
        fields.write_members(&mut line, &mut taken);
        assert_eq!(line, br#","b":22,"a":444"#, "a taken key is left out");
        assert_eq!(taken, ["c", "b", "a"]);
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
