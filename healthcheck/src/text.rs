//! Small text helpers shared by probes and reports: durations as milliseconds, and one-line excerpts
//! of what a server sent. A leaf: it imports nothing from the crate (`millis` is the shared line
//! shape's, telemetry-core's).

/// A duration in milliseconds, to the microsecond (for reports and `latency_ms` fields).
pub use telemetry_core::millis;

/// Milliseconds for people: "0.4 ms", "12 ms", "1250 ms".
pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

/// `text` on one line, control characters replaced, at most `max` characters (then `…`).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
