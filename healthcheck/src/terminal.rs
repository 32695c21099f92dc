//! The terminal view of a run: one line per probe (mark, name, status, latency against budget, what
//! it saw), the failure reason and request id under each failed probe, a one-line verdict, and the
//! latency chart. Colour only when asked or when stdout is a terminal and NO_COLOR is unset.
//! A pure function of the report: it must never decide the outcome or the exit code.

use std::fmt::Write as _;

use crate::report::Report;
use crate::text::{ms, one_line};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

struct Paint(bool);

impl Paint {
    fn on(&self, style: &str, text: &str) -> String {
        if self.0 {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }
}

pub fn render(report: &Report, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} · stage {} · {}",
        paint.on(BOLD, "healthcheck"),
        paint.on(BOLD, &report.stage),
        report.target
    );
    out.push('\n');
    let name_width = report
        .probes
        .iter()
        .map(|p| p.probe.as_str().len())
        .max()
        .unwrap_or(0);
    for p in &report.probes {
        let mark = if p.ok {
            paint.on(GREEN, "✓")
        } else {
            paint.on(RED, "✗")
        };
        let status = p.status.map_or("---".to_owned(), |s| s.to_string());
        let timing = format!("{:>9} / {:>5} ms", ms(p.latency_ms), p.budget_ms);
        let what = if p.ok {
            p.note.clone().unwrap_or_default()
        } else {
            p.failure.map(|k| k.as_str()).unwrap_or("failed").to_owned()
        };
        let _ = writeln!(
            out,
            "  {mark} {:<name_width$}  {status}  {timing}  {}",
            p.probe.as_str(),
            if p.ok {
                paint.on(DIM, &what)
            } else {
                paint.on(RED, &what)
            }
        );
        if !p.ok {
            let indent = " ".repeat(name_width + 6);
            let _ = writeln!(
                out,
                "{indent}{}",
                one_line(p.reason.as_deref().unwrap_or(""), 400)
            );
            let _ = writeln!(
                out,
                "{indent}{}",
                paint.on(
                    DIM,
                    &format!(
                        "request id {}{}",
                        p.request_id.as_deref().unwrap_or(&p.request_id_sent),
                        if p.attempts > 1 {
                            format!(" · {} attempts", p.attempts)
                        } else {
                            String::new()
                        }
                    )
                )
            );
        }
    }
    out.push('\n');
    let verdict = format!(
        "{} {} (full cycle {})",
        if report.ok { "✓" } else { "✗" },
        report.headline(),
        ms(report.duration_ms)
    );
    let _ = writeln!(
        out,
        "{}",
        paint.on(if report.ok { GREEN } else { RED }, &verdict)
    );
    out.push('\n');
    out.push_str(&paint.on(DIM, report.latency_chart().trim_end()));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::config::Settings;
    use crate::names::{FailureKind, ProbeName};
    use crate::outcome::ProbeResult;

    #[test]
    fn failures_show_their_reason_and_request_id_without_colour_codes() {
        let settings = Settings::new("http://127.0.0.1:9".parse().unwrap());
        let failed = ProbeResult {
            probe: ProbeName::Readyz,
            ok: false,
            status: None,
            latency_ms: 0.8,
            budget_ms: 1000,
            failure: Some(FailureKind::Connect),
            reason: Some("GET /readyz: cannot connect to 127.0.0.1:9: Connection refused".into()),
            note: None,
            request_id_sent: "canary-abc".into(),
            request_id: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            attempts: 1,
            earlier_failures: vec![],
            steps: vec![],
        };
        let report = Report::new(
            &settings,
            Utc::now(),
            Duration::from_millis(1),
            vec![failed],
        );
        let text = render(&report, false);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("✗ readyz  ---     0.8 ms /  1000 ms  connect"),
            "{text}"
        );
        assert!(text.contains("Connection refused"), "{text}");
        assert!(text.contains("request id canary-abc"), "{text}");
        assert!(text.contains("✗ 1 of 1 probes failed"), "{text}");
        assert!(render(&report, true).contains(RED));
    }
}
