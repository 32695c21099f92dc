//! A run's report and its three renderings: JSON (for machines and the Lambda's result), Markdown (for
//! a CI step summary: a table, a latency chart, the requests behind it) and JUnit XML (for CI test
//! views). Pure functions of the report: rendering must never do I/O or change the outcome.
//!
//! The latency chart is text (block characters in a code block), not SVG: GitHub's step summary
//! strips inline SVG and data-URI images, and a text chart also reads well in a terminal and in logs.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::outcome::ProbeResult;
use crate::text::{millis, ms, one_line};

/// Everything one canary run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Every probe passed within its budget.
    pub ok: bool,
    pub stage: String,
    pub target: String,
    pub started_at: DateTime<Utc>,
    /// The full probe cycle, all probes one after another.
    pub duration_ms: f64,
    pub passed: usize,
    pub failed: usize,
    pub probes: Vec<ProbeResult>,
    pub healthcheck_version: String,
}

impl Report {
    pub fn new(
        settings: &Settings,
        started_at: DateTime<Utc>,
        duration: Duration,
        probes: Vec<ProbeResult>,
    ) -> Self {
        let passed = probes.iter().filter(|p| p.ok).count();
        let failed = probes.len() - passed;
        Self {
            ok: failed == 0 && passed > 0,
            stage: settings.stage.to_string(),
            target: settings.target.to_string(),
            started_at,
            duration_ms: millis(duration),
            passed,
            failed,
            probes,
            healthcheck_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A one-line headline: "5 of 5 probes passed" / "2 of 5 probes failed".
    pub fn headline(&self) -> String {
        let total = self.probes.len();
        if self.ok {
            format!("{} of {total} probes passed", self.passed)
        } else {
            format!("{} of {total} probes failed", self.failed)
        }
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let icon = if self.ok { "✅" } else { "❌" };
        let _ = writeln!(
            md,
            "## {icon} Canary `{}`: {}\n",
            code(&self.stage),
            self.headline()
        );
        let _ = writeln!(
            md,
            "Target `{}` · started {} · full cycle {} · healthcheck {}\n",
            code(&self.target),
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            ms(self.duration_ms),
            self.healthcheck_version
        );
        md.push_str("| | Probe | Status | Latency | Budget | Result | Request id |\n");
        md.push_str("|---|---|--:|--:|--:|---|---|\n");
        for p in &self.probes {
            let (icon, result) = if p.ok {
                ("✅", cell(p.note.as_deref().unwrap_or("ok")))
            } else {
                let kind = p.failure.map(|k| k.as_str()).unwrap_or("failed");
                (
                    "❌",
                    format!("**{kind}**: {}", cell(p.reason.as_deref().unwrap_or(""))),
                )
            };
            let retries = if p.attempts > 1 {
                format!(" (attempt {})", p.attempts)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {icon} | {}{retries} | {} | {} | {} ms | {result} | `{}` |",
                p.probe,
                p.status.map_or("—".to_owned(), |s| s.to_string()),
                ms(p.latency_ms),
                p.budget_ms,
                code(p.request_id.as_deref().unwrap_or(&p.request_id_sent)),
            );
        }

        md.push_str(
            "\n**Latency against each probe's budget** (full bar = budget; ▶ = over budget)\n\n",
        );
        md.push_str("```text\n");
        md.push_str(&self.latency_chart());
        md.push_str("```\n");

        let requests: usize = self.probes.iter().map(|p| p.steps.len()).sum();
        let _ = writeln!(
            md,
            "\n<details><summary>The {requests} requests behind it</summary>\n"
        );
        md.push_str("| Probe | Request | Status | Latency | Request id returned |\n");
        md.push_str("|---|---|--:|--:|---|\n");
        for p in &self.probes {
            for s in &p.steps {
                let _ = writeln!(
                    md,
                    "| {} | `{} {}` | {} | {} | {} |",
                    p.probe,
                    s.method,
                    code(&s.path),
                    s.status.map_or("no response".to_owned(), |s| s.to_string()),
                    ms(s.latency_ms),
                    s.request_id
                        .as_deref()
                        .map_or("—".to_owned(), |id| format!("`{}`", code(id))),
                );
            }
        }
        md.push_str("\n</details>\n");
        md
    }

    /// One bar per probe: latency as a share of its budget, 30 cells = the budget, in eighths of a cell.
    pub fn latency_chart(&self) -> String {
        const WIDTH: f64 = 30.0;
        let name_width = self
            .probes
            .iter()
            .map(|p| p.probe.as_str().len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for p in &self.probes {
            let budget = p.budget_ms.max(1) as f64;
            let share = p.latency_ms / budget;
            let bar = bar(share.min(1.0) * WIDTH);
            let over = if share > 1.0 { "▶" } else { " " };
            let percent = share * 100.0;
            let percent = if percent < 9.95 {
                format!("{percent:.1}%")
            } else {
                format!("{percent:.0}%")
            };
            let _ = writeln!(
                out,
                "{:<name_width$}  {bar:<30}{over} {percent:>5}  {:>9} of {} ms{}",
                p.probe.as_str(),
                ms(p.latency_ms),
                p.budget_ms,
                if p.ok { "" } else { "  FAILED" },
            );
        }
        out
    }

    pub fn to_junit(&self) -> String {
        let suite = format!("canary.{}", self.stage);
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let time = seconds(self.duration_ms);
        let _ = writeln!(
            xml,
            "<testsuites name=\"healthcheck\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{time}\">",
            self.probes.len(),
            self.failed
        );
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
            xml_escape(&suite),
            self.probes.len(),
            self.failed,
            self.started_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        xml.push_str("    <properties>\n");
        for (name, value) in [
            ("target", self.target.as_str()),
            ("stage", self.stage.as_str()),
            ("healthcheck_version", self.healthcheck_version.as_str()),
        ] {
            let _ = writeln!(
                xml,
                "      <property name=\"{name}\" value=\"{}\"/>",
                xml_escape(value)
            );
        }
        xml.push_str("    </properties>\n");
        for p in &self.probes {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                xml_escape(&suite),
                p.probe,
                seconds(p.latency_ms)
            );
            let mut out = format!(
                "checks: {}\nrequest id sent: {}\nrequest id returned: {}\ntrace id: {}\nlatency: {} of a {} ms budget; attempts: {}\n",
                p.probe.checks(),
                p.request_id_sent,
                p.request_id.as_deref().unwrap_or("none"),
                p.trace_id,
                ms(p.latency_ms),
                p.budget_ms,
                p.attempts
            );
            for s in &p.steps {
                let _ = writeln!(
                    out,
                    "{} {} -> {} in {}",
                    s.method,
                    s.path,
                    s.status.map_or("no response".to_owned(), |s| s.to_string()),
                    ms(s.latency_ms)
                );
            }
            xml.push_str(">\n");
            if !p.ok {
                let reason = p.reason.as_deref().unwrap_or("failed");
                let _ = writeln!(
                    xml,
                    "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                    p.failure.map(|k| k.as_str()).unwrap_or("failed"),
                    xml_escape(reason),
                    xml_escape(reason)
                );
            }
            let _ = writeln!(xml, "      <system-out>{}</system-out>", xml_escape(&out));
            xml.push_str("    </testcase>\n");
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

/// A bar `cells` long (fractional), drawn in eighths; any non-zero share shows at least a sliver.
fn bar(cells: f64) -> String {
    const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let eighths = (cells * 8.0).round() as usize;
    let mut out = "█".repeat(eighths / 8);
    match eighths % 8 {
        0 if eighths == 0 && cells > 0.0 => out.push('▏'),
        0 => {}
        rest => out.push(EIGHTHS[rest - 1]),
    }
    out
}

fn seconds(ms: f64) -> String {
    format!("{:.3}", ms / 1000.0)
}

/// Text for a Markdown table cell: one line, pipes escaped, no HTML.
fn cell(text: &str) -> String {
    one_line(text, 300)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for inside a Markdown code span: one line, no backticks, pipes escaped (tables split on them
/// even inside code spans).
fn code(text: &str) -> String {
    one_line(text, 200).replace('`', "'").replace('|', "\\|")
}

/// Escape text for XML attribute values and character data; drop characters XML 1.0 cannot hold.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Settings;
    use crate::names::{FailureKind, ProbeName};
    use crate::outcome::Step;

    fn result(probe: ProbeName, ok: bool, latency_ms: f64, budget_ms: u64) -> ProbeResult {
        ProbeResult {
            probe,
            ok,
            status: Some(if ok { 200 } else { 503 }),
            latency_ms,
            budget_ms,
            failure: (!ok).then_some(FailureKind::Status),
            reason: (!ok).then(|| "GET /readyz answered 503 | <b>down</b> & \"out\"".to_owned()),
            note: ok.then(|| "ready".to_owned()),
            request_id_sent: "canary-1".to_owned(),
            request_id: Some("canary-1".to_owned()),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            attempts: 1,
            earlier_failures: vec![],
            steps: vec![Step {
                method: "GET".into(),
                path: "/readyz".into(),
                status: Some(200),
                latency_ms,
                request_id: Some("canary-1".into()),
            }],
        }
    }

    fn report(probes: Vec<ProbeResult>) -> Report {
        let settings = Settings::new("http://127.0.0.1:8080".parse().unwrap());
        Report::new(&settings, Utc::now(), Duration::from_millis(42), probes)
    }

    #[test]
    fn a_report_is_ok_only_when_every_probe_passed() {
        let good = report(vec![result(ProbeName::Website, true, 3.0, 2000)]);
        assert!(good.ok);
        assert_eq!(good.headline(), "1 of 1 probes passed");
        let bad = report(vec![
            result(ProbeName::Website, true, 3.0, 2000),
            result(ProbeName::Readyz, false, 3.0, 1000),
        ]);
        assert!(!bad.ok);
        assert_eq!((bad.passed, bad.failed), (1, 1));
        assert_eq!(bad.headline(), "1 of 2 probes failed");
        assert!(
            !report(vec![]).ok,
            "a run that probed nothing proves nothing"
        );
    }

    #[test]
    fn the_json_report_round_trips() {
        let original = report(vec![result(ProbeName::Readyz, false, 3.0, 1000)]);
        let parsed: Report = serde_json::from_str(&original.to_json()).unwrap();
        assert_eq!(parsed, original);
        let value: serde_json::Value = serde_json::from_str(&original.to_json()).unwrap();
        assert_eq!(value["probes"][0]["probe"], "readyz");
        assert_eq!(value["probes"][0]["failure"], "status");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        let md = report(vec![result(ProbeName::Readyz, false, 3.0, 1000)]).to_markdown();
        let row = md.lines().find(|l| l.starts_with("| ❌ | readyz")).unwrap();
        assert!(
            row.contains(r"503 \| &lt;b&gt;down&lt;/b&gt; & "),
            "pipes and HTML are escaped: {row}"
        );
        assert_eq!(row.matches(" | ").count(), 6, "{row}");
    }

    #[test]
    fn bars_show_the_share_of_the_budget() {
        assert_eq!(bar(0.0), "");
        assert_eq!(bar(0.01), "▏", "a sliver for anything above zero");
        assert_eq!(bar(1.5), "█▌");
        assert_eq!(bar(30.0).chars().count(), 30);
        let chart = report(vec![
            result(ProbeName::Website, true, 500.0, 2000),
            result(ProbeName::Readyz, false, 1500.0, 1000),
        ])
        .latency_chart();
        let lines: Vec<&str> = chart.lines().collect();
        assert!(lines[0].starts_with("website  ███████▌ "), "{chart}");
        assert!(lines[0].contains("  25%"), "{chart}");
        assert!(lines[1].contains("█▶  150%"), "{chart}");
        assert!(chart.contains("  25%"), "{chart}");
        assert!(lines[1].ends_with("FAILED"), "{chart}");
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let xml = report(vec![
            result(ProbeName::Website, true, 3.0, 2000),
            result(ProbeName::Readyz, false, 1234.0, 1000),
        ])
        .to_junit();
        assert!(
            xml.contains(r#"<testsuites name="healthcheck" tests="2" failures="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase classname="canary.local" name="readyz" time="1.234">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure type="status" message="GET /readyz answered 503 | &lt;b&gt;down&lt;/b&gt; &amp; &quot;out&quot;">"#),
            "{xml}"
        );
        assert_eq!(xml.matches("<failure").count(), 1);
        assert_eq!(
            xml.matches("trace id: 4bf92f3577b34da6a3ce929d0e0e4736")
                .count(),
            2,
            "each test case names its trace: {xml}"
        );
        assert_eq!(xml_escape("a\u{1}b"), "ab");
    }
}
