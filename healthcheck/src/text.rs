//! Small text helpers shared by probes and reports: durations as milliseconds, and one-line excerpts
//! of what a server sent. A leaf: it imports nothing from the crate.

use std::time::Duration;

/// A duration in milliseconds, to the microsecond (for reports and `latency_ms` fields).
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

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
