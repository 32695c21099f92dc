//! The JSON log line format: one flat object per event, with the fixed fields every line carries
//! (`timestamp`, `level`, `target`, `service`, `version`, `env`), the fields of the request being
//! served (`request_id`, `method`, `route`, …; see [`super::request`]) and of every enclosing span, and
//! the event's own fields.
//!
//! Two writers, one format: [`JsonLayer`] writes every tracing event; [`RequestLines`] writes the line
//! that closes each request without a tracing event where the layer would be its only reader, in the
//! same bytes (a test compares them), since that line is most of what logging costs.
//!
//! Flat, not nested: Logs Insights and jq queries read `request_id`, not `span.request_id`.
//! Must never: drop a field silently, or emit anything but exactly one line per event.

use std::fmt;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Fields every line carries.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: &'static str,
    pub version: &'static str,
    pub env: String,
}

/// The layer that writes every event as one JSON line to `writer`. A layer of its own rather than a
/// format for tracing-subscriber's fmt layer: a line is built once in a per-thread buffer and handed to
/// the writer as it is, without the fmt layer's second copy into a `String` and its UTF-8 re-check.
pub struct JsonLayer<W> {
    /// `,"service":…,"version":…,"env":…`, serialized once.
    identity: Vec<u8>,
    writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(identity: Identity, writer: W) -> Self {
        Self {
            identity: identity.members(),
            writer,
        }
    }
}

impl Identity {
    /// `,"service":…,"version":…,"env":…`, as every line carries them.
    fn members(&self) -> Vec<u8> {
        let mut members = Vec::new();
        for (key, value) in [
            ("service", self.service),
            ("version", self.version),
            ("env", self.env.as_str()),
        ] {
            push_key(&mut members, key);
            push_json(&mut members, value);
        }
        members
    }
}

/// `,"level":…,"target":…`, as every line of that level and target starts (after its timestamp).
fn level_and_target(level: tracing::Level, target: &str) -> Vec<u8> {
    let mut head = Vec::new();
    push_key(&mut head, "level");
    push_str(&mut head, level.as_str());
    push_key(&mut head, "target");
    push_str(&mut head, target);
    head
}

/// A span's fields as JSON object members, each with its leading comma (`,"request_id":"…"`), formatted
/// once when the span is created or recorded and spliced into every line logged inside it.
struct SpanMembers(Vec<u8>);

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut members = Vec::with_capacity(128);
        attrs.record(&mut FieldsVisitor {
            line: &mut members,
            keys: &[],
        });
        span.extensions_mut().insert(SpanMembers(members));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanMembers(members)) = extensions.get_mut::<SpanMembers>() {
            values.record(&mut FieldsVisitor {
                line: members,
                keys: &[],
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Written straight into one buffer: this runs for every request, so no intermediate map and no
        // re-parsing of span fields (they are already JSON members; they are spliced in).
        with_scratch(|line| {
            self.write_line(&ctx, event, line);
            // Nowhere to report a failed log write; the relay goes on.
            let _ = self
                .writer
                .make_writer_for(event.metadata())
                .write_all(line);
        });
    }
}

/// Run `f` on this thread's scratch buffer, emptied (a fresh one if logging ever re-enters itself).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            f(&mut buffer)
        }
        Err(_) => f(&mut Vec::with_capacity(512)),
    })
}

impl<W> JsonLayer<W> {
    fn write_line<S>(&self, ctx: &Context<'_, S>, event: &Event<'_>, line: &mut Vec<u8>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let template = Template::of(event.metadata());
        start_line(line, &template.head, &self.identity);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanMembers(members)) = span.extensions().get::<SpanMembers>() {
                    line.extend_from_slice(members);
                }
            }
        }
        event.record(&mut FieldsVisitor {
            line,
            keys: &template.keys,
        });
        line.extend_from_slice(b"}\n");
    }
}

/// The start of every line: `{"timestamp":"…"`, the level and target members (`head`), the identity
/// members and the current request's fields.
fn start_line(line: &mut Vec<u8>, head: &[u8], identity: &[u8]) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    push_timestamp(line, std::time::SystemTime::now());
    line.push(b'"');
    line.extend_from_slice(head);
    line.extend_from_slice(identity);
    super::request::with_current(|request| {
        if let Some(request) = request {
            push_request(line, request);
        }
    });
}

/// The line that closes a request (`message`, `status`, `latency_ms`), written straight to the log
/// writer instead of through a tracing event, where nothing but the JSON layer would read that event
/// (JSON lines, request fields in the slot, a `Targets` filter, no span entered: see
/// `telemetry::init_logging`).
///
/// Why: that line is written for every request, and a tracing event spent more on itself than on the
/// line: dispatch, a filter pass, a template lookup and a visitor call per field, most of it on cold
/// caches between requests (measured: see the README's benchmarks). Its bytes are exactly those the layer
/// writes for the same event, which a test checks, and the filter decides as it would for the event.
pub struct RequestLines {
    /// `,"level":"INFO","target":…` for requests that finished; `None` when the filter turns their
    /// lines off.
    finished: Option<Vec<u8>>,
    /// The same at `ERROR`, for requests that failed (5xx).
    failed: Option<Vec<u8>>,
    /// `,"service":…,"version":…,"env":…`.
    identity: Vec<u8>,
    writer: super::paced::PacedWriter,
}

impl RequestLines {
    /// Lines as the JSON layer with `identity` would write events of `target` that `filter` lets
    /// through, to `writer`. `Targets` decides by target and level alone, so once, here.
    pub fn new(
        identity: &Identity,
        target: &str,
        filter: &tracing_subscriber::filter::Targets,
        writer: super::paced::PacedWriter,
    ) -> Self {
        let head = |level| {
            filter
                .would_enable(target, &level)
                .then(|| level_and_target(level, target))
        };
        Self {
            finished: head(tracing::Level::INFO),
            failed: head(tracing::Level::ERROR),
            identity: identity.members(),
            writer,
        }
    }

    /// Write the line of a request that finished (`failed`: with a 5xx, at `ERROR`), unless the filter
    /// turns it off. `false`, writing nothing, inside a span: the line would lack the span's fields, so
    /// the caller logs it through tracing.
    pub fn write(&self, failed: bool, message: &str, status: u16, latency_ms: f64) -> bool {
        let Some(head) = (if failed { &self.failed } else { &self.finished }) else {
            return true;
        };
        let in_span =
            tracing::dispatcher::get_default(|dispatch| dispatch.current_span().id().is_some());
        if in_span {
            return false;
        }
        with_scratch(|line| {
            start_line(line, head, &self.identity);
            line.extend_from_slice(br#","message":"#);
            push_str(line, message);
            line.extend_from_slice(br#","status":"#);
            push_json(line, &status);
            line.extend_from_slice(br#","latency_ms":"#);
            push_f64(line, latency_ms);
            line.extend_from_slice(b"}\n");
            // Nowhere to report a failed log write; the relay goes on.
            let _ = self.writer.make_writer().write_all(line);
        });
        true
    }
}

/// What every line of one call site shares, rendered once per thread: `,"level":…,"target":…` and the
/// key of each of its fields (`,"status":`). Events come from a few dozen call sites, so a line copies
/// these instead of escaping the same level, target and field names again every time.
struct Template {
    /// What it was rendered for: records of the `log` crate arrive through shared call sites with
    /// metadata made on the spot, whose address may be reused for another target or level.
    callsite: tracing::callsite::Identifier,
    level: tracing::Level,
    target: (usize, usize),
    head: Box<[u8]>,
    /// By field index (`Field::index`).
    keys: Box<[Box<[u8]>]>,
}

/// Past this many templates on a thread (metadata made on the spot, each at a new address), start over.
const MAX_TEMPLATES: usize = 512;

impl Template {
    fn of(meta: &tracing::Metadata<'_>) -> std::rc::Rc<Self> {
        type Templates = rustc_hash::FxHashMap<usize, std::rc::Rc<Template>>;
        thread_local! {
            static TEMPLATES: std::cell::RefCell<Templates> = std::cell::RefCell::new(Templates::default());
        }
        let address = std::ptr::from_ref(meta) as usize;
        let cached = TEMPLATES.with(|templates| {
            templates
                .try_borrow()
                .ok()
                .and_then(|t| t.get(&address).filter(|t| t.renders(meta)).cloned())
        });
        if let Some(template) = cached {
            return template;
        }
        let template = std::rc::Rc::new(Self::render(meta));
        TEMPLATES.with(|templates| {
            if let Ok(mut templates) = templates.try_borrow_mut() {
                if templates.len() >= MAX_TEMPLATES {
                    templates.clear();
                }
                templates.insert(address, template.clone());
            }
        });
        template
    }

    fn renders(&self, meta: &tracing::Metadata<'_>) -> bool {
        self.callsite == meta.callsite()
            && self.level == *meta.level()
            && self.target == (meta.target().as_ptr() as usize, meta.target().len())
    }

    fn render(meta: &tracing::Metadata<'_>) -> Self {
        let keys = meta
            .fields()
            .iter()
            .map(|field| {
                let mut key = Vec::new();
                push_key(&mut key, field.name());
                key.into_boxed_slice()
            })
            .collect();
        Self {
            callsite: meta.callsite(),
            level: *meta.level(),
            target: (meta.target().as_ptr() as usize, meta.target().len()),
            head: level_and_target(*meta.level(), meta.target()).into_boxed_slice(),
            keys,
        }
    }
}

/// The current request's fields, in the order the request span records them.
fn push_request(line: &mut Vec<u8>, request: &super::request::RequestFields) {
    line.extend_from_slice(br#","request_id":""#);
    // Ids are checked or made by the request-id layer, so plain ASCII: copied without a UTF-8 check.
    match request.request_id_bytes() {
        id if is_plain_ascii(id) => line.extend_from_slice(id),
        _ => push_str_contents(line, request.request_id()),
    }
    line.extend_from_slice(br#"","method":""#);
    push_str_contents(line, request.method());
    line.extend_from_slice(br#"","route":""#);
    push_str_contents(line, request.route());
    line.push(b'"');
    if let Some(cold) = request.cold_start() {
        line.extend_from_slice(if cold {
            br#","cold_start":true"#
        } else {
            br#","cold_start":false"#
        });
    }
    if let Some(problem) = request.problem() {
        push_key(line, "problem");
        push_str(line, problem);
    }
}

/// `,"key":` (every key follows at least the timestamp, so always with its comma).
fn push_key(line: &mut Vec<u8>, key: &str) {
    line.push(b',');
    push_str(line, key);
    line.push(b':');
}

/// A JSON string. Most values (ids, routes, targets, messages) need no escaping: those are copied as
/// they are; anything else goes through serde_json's escaper, so the output is the same either way.
fn push_str(line: &mut Vec<u8>, value: &str) {
    line.push(b'"');
    push_str_contents(line, value);
    line.push(b'"');
}

/// The inside of a JSON string (what goes between the quotes), as serde_json escapes it.
fn push_str_contents(line: &mut Vec<u8>, value: &str) {
    if !needs_escape(value.as_bytes()) {
        line.extend_from_slice(value.as_bytes());
    } else if let Ok(quoted) = serde_json::to_string(value) {
        let inside = quoted.get(1..quoted.len().saturating_sub(1));
        line.extend_from_slice(inside.unwrap_or_default().as_bytes());
    }
}

/// Whether JSON needs any of these bytes escaped: a control character (below 0x20), `"` or `\\`.
///
/// Every line runs this over several short strings (ids, route, message, values), so it tests eight
/// bytes at a time: a byte-at-a-time loop cost about 10 instructions per byte, more than the rest of
/// the line together.
fn needs_escape(bytes: &[u8]) -> bool {
    any_word(bytes, |word| escaped(word) != 0)
}

/// Whether every byte is printable ASCII (0x20 to 0x7E) that JSON keeps as it is (not `"` or `\\`):
/// exactly the text a header value shows as a string, with nothing to escape.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    !any_word(bytes, |word| {
        // Bytes from 0x7F up: their low seven bits plus one carry into the high bit, or it is set.
        let high = ((word & !HIGHS).wrapping_add(ONES) | word) & HIGHS;
        escaped(word) | high != 0
    })
}

/// The high bit of each byte of `word` that JSON escapes (below 0x20, `"`, `\\`): more may be set
/// above a real one, never one without (see `below`).
const fn escaped(word: u64) -> u64 {
    below(word, 0x20 * ONES) | below(word ^ QUOTES, ONES) | below(word ^ BACKSLASHES, ONES)
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);

/// The high bit of each byte of `word` below the byte that `n` repeats (at most 0x80; `ONES` finds zero
/// bytes). The classic exact test ("determine if a word has a byte less than n"): a borrow may set
/// more high bits above a real match, never one without a match, so "any" is always right.
const fn below(word: u64, n: u64) -> u64 {
    word.wrapping_sub(n) & !word & HIGHS
}

/// Whether `test` finds something in any eight bytes of `bytes`: whole words, then the last eight
/// bytes (overlapping the last whole word), or for fewer than eight bytes, the bytes shifted into a
/// word of spaces (a byte neither test above looks for).
fn any_word(bytes: &[u8], test: impl Fn(u64) -> bool) -> bool {
    let load = |eight: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        u64::from_ne_bytes(word)
    };
    let Some(last) = bytes.len().checked_sub(8) else {
        return test(
            bytes
                .iter()
                .fold(SPACES, |word, &b| word << 8 | u64::from(b)),
        );
    };
    let mut chunks = bytes.chunks_exact(8);
    if chunks.any(|chunk| test(load(chunk))) {
        return true;
    }
    !chunks.remainder().is_empty() && bytes.get(last..).is_some_and(|tail| test(load(tail)))
}

/// A JSON number, as serde_json writes it (`null` for NaN and infinities). Exact thousandths below a
/// billion (every `latency_ms`, see `events::millis`) are written directly: their shortest decimal form
/// is the integer part, a dot and the thousandths without trailing zeros (at least one digit).
fn push_f64(line: &mut Vec<u8>, value: f64) {
    let scaled = value * 1000.0;
    // Rounded by adding a half and truncating: `f64::round` is a libm call on baseline x86-64. Any
    // candidate works, since it is used only if it is exactly `value` in thousandths.
    let thousandths = (scaled + 0.5) as u64;
    if value.is_sign_positive() && scaled < 1e12 && thousandths as f64 / 1000.0 == value {
        let mut digits = [0u8; 20];
        let whole = push_u64_digits(&mut digits, thousandths / 1000);
        line.extend_from_slice(whole);
        let fraction = thousandths % 1000;
        let fraction = [
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ];
        let kept = fraction
            .iter()
            .rposition(|d| *d != b'0')
            .map_or(1, |last| last + 1);
        line.push(b'.');
        line.extend_from_slice(&fraction[..kept]);
    } else if value.is_finite() {
        push_json(line, &value);
    } else {
        line.extend_from_slice(b"null");
    }
}

/// The decimal digits of `n`, written at the end of `buffer`.
fn push_u64_digits(buffer: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[at..];
        }
    }
}

/// A `Debug` value (an event's `message` is one) as a JSON string, formatted and escaped straight into
/// the line: escaping piece by piece gives the same bytes as escaping the whole text.
fn push_debug(line: &mut Vec<u8>, value: &dyn fmt::Debug) {
    struct Contents<'a>(&'a mut Vec<u8>);
    impl fmt::Write for Contents<'_> {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            push_str_contents(self.0, piece);
            Ok(())
        }
    }
    line.push(b'"');
    // A `Debug` implementation that fails leaves what it wrote so far; the line stays valid JSON.
    let _ = fmt::write(&mut Contents(line), format_args!("{value:?}"));
    line.push(b'"');
}

/// An RFC 3339 UTC timestamp with microseconds (`2026-01-02T03:04:05.678901Z`). The date and time of
/// day are formatted once per second per thread; each line adds only its microseconds.
fn push_timestamp(line: &mut Vec<u8>, now: std::time::SystemTime) {
    use std::cell::Cell;
    const PREFIX: usize = "2026-01-02T03:04:05".len();
    thread_local! {
        static SECOND: Cell<(u64, [u8; PREFIX])> = const { Cell::new((u64::MAX, [0; PREFIX])) };
    }
    let Ok(since_epoch) = now.duration_since(std::time::UNIX_EPOCH) else {
        line.extend_from_slice(humantime::format_rfc3339_micros(now).to_string().as_bytes());
        return;
    };
    let second = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != second {
        let text = humantime::format_rfc3339_seconds(now).to_string();
        match text.as_bytes().get(..PREFIX) {
            Some(date_time) => prefix.copy_from_slice(date_time),
            None => {
                line.extend_from_slice(
                    humantime::format_rfc3339_micros(now).to_string().as_bytes(),
                );
                return;
            }
        }
        SECOND.set((second, prefix));
    }
    line.extend_from_slice(&prefix);
    let mut fraction = *b".000000Z";
    let mut micros = since_epoch.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line.extend_from_slice(&fraction);
}

fn push_json<T: serde::Serialize + ?Sized>(line: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *line, value).is_err() {
        line.extend_from_slice(b"null");
    }
}

/// Write an event's or a span's fields into the line, keeping numbers and booleans typed.
struct FieldsVisitor<'a> {
    line: &'a mut Vec<u8>,
    /// Rendered keys by field index (see [`Template`]); a field without one has its key written here.
    keys: &'a [Box<[u8]>],
}

impl FieldsVisitor<'_> {
    fn key(&mut self, field: &Field) {
        match self.keys.get(field.index()) {
            Some(key) => self.line.extend_from_slice(key),
            None => push_key(self.line, field.name()),
        }
    }
}

impl Visit for FieldsVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_f64(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        push_json(self.line, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_json(self.line, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        push_json(self.line, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_str(self.line, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        push_json(self.line, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        push_debug(self.line, value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn strings_are_written_exactly_as_serde_json_writes_them() {
        for value in [
            "",
            "plain ASCII",
            "/messages/{id}",
            "quote \" and backslash \\",
            "control \n \t \u{1} \u{1f} \u{7f}",
            "non-ASCII: é ✓ 😀",
        ] {
            let mut fast = Vec::new();
            push_str(&mut fast, value);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(value).unwrap(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn word_at_a_time_checks_agree_with_byte_at_a_time_ones() {
        let escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        let plain = |b: u8| (0x20..=0x7e).contains(&b) && !escape(b);
        // Fillers next to the bytes searched for (space, `!`, `#`, `[`, `]`, `~`) and, for the escape
        // check, bytes of UTF-8 text: a one-byte difference must never hide or fake a match.
        for filler in [b'a', b' ', b'!', b'#', b'[', b']', b'~', 0x80, 0xc3, 0xff] {
            for len in 0..=25usize {
                let text = vec![filler; len];
                assert!(!needs_escape(&text), "{filler:#04x} x {len}");
                assert_eq!(is_plain_ascii(&text), text.iter().all(|&b| plain(b)));
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut bytes = text.clone();
                        bytes[at] = byte;
                        assert_eq!(
                            needs_escape(&bytes),
                            bytes.iter().any(|&b| escape(b)),
                            "{byte:#04x} at {at} of {len} among {filler:#04x}"
                        );
                        assert_eq!(
                            is_plain_ascii(&bytes),
                            bytes.iter().all(|&b| plain(b)),
                            "{byte:#04x} at {at} of {len} among {filler:#04x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn templates_follow_the_metadata_they_were_made_for() {
        use tracing::Level;
        use tracing::callsite::{Callsite, Identifier};
        use tracing::field::FieldSet;
        use tracing::metadata::{Kind, Metadata};
        use tracing::subscriber::Interest;

        /// A call site shared by records made on the spot, as the `log` crate's records arrive.
        struct Shared;
        impl Callsite for Shared {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &STATIC
            }
        }
        static SHARED: Shared = Shared;
        static STATIC: Metadata<'static> = Metadata::new(
            "event",
            "static",
            Level::INFO,
            None,
            None,
            None,
            FieldSet::new(&["message"], Identifier(&SHARED)),
            Kind::EVENT,
        );
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        // Made in turn at one stack address, so the cache sees the same key with other contents.
        for (target, level) in [
            ("first::target", Level::INFO),
            ("second \"quoted\"", Level::INFO),
            ("second \"quoted\"", Level::WARN),
            ("first::target", Level::INFO),
        ] {
            let target = target.to_owned();
            let meta = Metadata::new(
                "event",
                &target,
                level,
                None,
                None,
                None,
                FieldSet::new(&["message", "log.target"], Identifier(&SHARED)),
                Kind::EVENT,
            );
            let template = Template::of(&meta);
            assert_eq!(
                text(&template.head),
                format!(
                    r#","level":"{level}","target":{}"#,
                    serde_json::to_string(&target).unwrap()
                )
            );
            let keys: Vec<String> = template.keys.iter().map(|k| text(k)).collect();
            assert_eq!(keys, [r#","message":"#, r#","log.target":"#]);
        }
        let template = Template::of(&STATIC);
        assert_eq!(text(&template.head), r#","level":"INFO","target":"static""#);
        assert_eq!(template.keys.len(), 1);
    }

    #[test]
    fn request_lines_are_the_bytes_the_layer_writes_for_the_same_event() {
        use std::io;
        use std::sync::{Arc, Mutex};

        use axum::http::HeaderValue;
        use tracing_subscriber::layer::SubscriberExt;

        use crate::telemetry::paced::paced;
        use crate::telemetry::request::{RequestFields, in_scope, record_problem};

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        const TARGET: &str = "relay::telemetry::events";
        let identity = Identity {
            service: "relay",
            version: "9.9.9",
            env: "env \"quoted\"".into(),
        };
        let (direct, layer) = (Sink::default(), Sink::default());
        let hour = Duration::from_secs(3600);
        let (direct_writer, direct_flusher) = paced(direct.clone(), hour).unwrap();
        let (layer_writer, layer_flusher) = paced(layer.clone(), hour).unwrap();
        let everything =
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::TRACE);
        let lines = RequestLines::new(&identity, TARGET, &everything, direct_writer);
        // Filtered as the event would be: at `warn`, failures only.
        let quiet_sink = Sink::default();
        let (quiet_writer, quiet_flusher) = paced(quiet_sink.clone(), hour).unwrap();
        let warn: tracing_subscriber::filter::Targets = "warn".parse().unwrap();
        let quiet = RequestLines::new(&identity, TARGET, &warn, quiet_writer);
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(identity, layer_writer));
        tracing::subscriber::with_default(subscriber, || {
            let cases = [
                (false, 200u16, 0.012, None, None, "Request finished."),
                (
                    false,
                    404,
                    3.5,
                    Some("message-not-found"),
                    Some(false),
                    "Request finished.",
                ),
                (
                    true,
                    503,
                    1234.567,
                    Some("store-unavailable"),
                    Some(true),
                    "Request failed.",
                ),
            ];
            for (failed, status, latency_ms, problem, cold_start, message) in cases {
                let id = HeaderValue::from_static("01a23114-f80b-7175-bcb5-17e3cbded2e7");
                let mut fields = Some(RequestFields::new(
                    Some(id),
                    "GET",
                    "/messages/{id}",
                    cold_start,
                ));
                in_scope(&mut fields, || {
                    if let Some(problem) = problem {
                        record_problem(problem);
                    }
                    assert!(lines.write(failed, message, status, latency_ms));
                    assert!(quiet.write(failed, message, status, latency_ms));
                    if failed {
                        tracing::error!(target: TARGET, message, status, latency_ms);
                    } else {
                        tracing::info!(target: TARGET, message, status, latency_ms);
                    }
                });
            }
            let span = tracing::info_span!("outer", k = 1);
            let _entered = span.enter();
            assert!(
                !lines.write(false, "Request finished.", 200, 1.0),
                "inside a span the caller logs through tracing"
            );
        });
        drop((direct_flusher, layer_flusher, quiet_flusher));
        let text = |sink: &Sink| String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let quiet = text(&quiet_sink);
        assert_eq!(quiet.lines().count(), 1, "{quiet}");
        assert!(quiet.contains(r#""level":"ERROR""#), "{quiet}");
        let (direct, layer) = (text(&direct), text(&layer));
        // The timestamps differ by the time between the two writes; everything else is equal.
        let masked = |text: &str| -> Vec<String> {
            text.lines()
                .map(|line| format!("{}T{}", &line[..14], &line[41..]))
                .collect()
        };
        assert_eq!(masked(&direct), masked(&layer));
        let parsed: Vec<serde_json::Value> = direct
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3, "{direct}");
        assert_eq!(parsed[0]["level"], "INFO");
        assert_eq!(parsed[0]["latency_ms"], 0.012);
        assert_eq!(parsed[1]["problem"], "message-not-found");
        assert_eq!(parsed[1]["cold_start"], false);
        assert_eq!(parsed[2]["level"], "ERROR");
        assert_eq!(parsed[2]["message"], "Request failed.");
        assert_eq!(parsed[2]["status"], 503);
        assert_eq!(parsed[2]["cold_start"], true);
        assert_eq!(parsed[2]["env"], "env \"quoted\"");
        assert_eq!(parsed[2]["target"], TARGET);
    }

    #[test]
    fn debug_values_are_written_exactly_as_serde_json_writes_their_text() {
        let text = "quote \" backslash \\ newline \n control \u{1} é ✓";
        for value in [
            format_args!("Request finished."),
            format_args!("{text} and {}", 42),
            format_args!(""),
        ] {
            let mut direct = Vec::new();
            push_debug(&mut direct, &value);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                serde_json::to_string(&format!("{value:?}")).unwrap()
            );
        }
    }

    #[test]
    fn numbers_are_written_exactly_as_serde_json_writes_them() {
        let mut values: Vec<f64> = (0..=120_000u64).map(|k| k as f64 / 1000.0).collect();
        values.extend([
            crate::telemetry::events::millis(std::time::Duration::from_nanos(1_234_567_891)),
            999_999_999.999,
            1e9,
            1e12,
            0.0005,
            0.1 + 0.2,
            -1.5,
            -0.0,
            1e-7,
            123_456_789_012.5,
        ]);
        for value in values {
            let mut direct = Vec::new();
            push_f64(&mut direct, value);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{value}"
            );
        }
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut direct = Vec::new();
            push_f64(&mut direct, value);
            assert_eq!(direct, b"null");
        }
    }

    #[test]
    fn timestamps_match_rfc3339_with_microseconds_within_and_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        for offset_micros in [
            0,
            1,
            999_999,
            1_000_000,
            1_000_001,
            59_123_456,
            86_400_000_007,
        ] {
            let at = base + Duration::from_micros(offset_micros);
            let mut line = Vec::new();
            push_timestamp(&mut line, at);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                humantime::format_rfc3339_micros(at).to_string()
            );
        }
        // The same second again, after another one: the cached prefix must have moved on.
        let mut again = Vec::new();
        push_timestamp(&mut again, base + Duration::from_micros(5));
        assert_eq!(
            String::from_utf8(again).unwrap(),
            humantime::format_rfc3339_micros(base + Duration::from_micros(5)).to_string()
        );
        let now = SystemTime::now();
        let mut current = Vec::new();
        push_timestamp(&mut current, now);
        assert_eq!(
            String::from_utf8(current).unwrap(),
            humantime::format_rfc3339_micros(now).to_string()
        );
    }
}
