//! The canary's metric catalog: the CloudWatch namespace, every metric it publishes with its unit and
//! dimensions, and the values each dimension takes. `healthcheck metrics-catalog` prints it, and
//! dashboards and alarms are checked against it.
//!
//! Metric and dimension names must appear nowhere else in the code: `publish.rs` builds every datum
//! from these entries, so what is published and what is documented cannot drift apart.

use serde::Serialize;

use crate::names::ProbeName;

/// The CloudWatch namespace of every canary metric.
pub const NAMESPACE: &str = "Relay/Canary";

/// A dimension of canary metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dimension {
    Stage,
    Probe,
}

impl Dimension {
    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Stage => "Stage",
            Dimension::Probe => "Probe",
        }
    }
}

/// Every metric the canary publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryMetric {
    Success,
    Duration,
    RunSuccess,
}

/// One catalog entry.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    pub name: &'static str,
    /// A CloudWatch `StandardUnit` name.
    pub unit: &'static str,
    pub dimensions: &'static [Dimension],
    /// The statistic dashboards and alarms should read it with.
    pub statistic: &'static str,
    pub values: &'static str,
    pub help: &'static str,
}

impl CanaryMetric {
    pub const ALL: [CanaryMetric; 3] = [
        CanaryMetric::Success,
        CanaryMetric::Duration,
        CanaryMetric::RunSuccess,
    ];

    /// Whether the metric is about one probe (one datum per probe per run) or the whole run (one datum).
    pub const fn per_probe(self) -> bool {
        !matches!(self, CanaryMetric::RunSuccess)
    }

    pub const fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub const fn spec(self) -> Spec {
        match self {
            CanaryMetric::Success => Spec {
                name: "Success",
                unit: "Count",
                dimensions: &[Dimension::Stage, Dimension::Probe],
                statistic: "Minimum",
                values: "1 when the probe passed within its latency budget, 0 when it failed or was too slow",
                help: "One datum per probe per run. Minimum over a period is 0 if any run failed; \
                       Average is the success ratio; no data means the canary itself stopped.",
            },
            CanaryMetric::Duration => Spec {
                name: "Duration",
                unit: "Milliseconds",
                dimensions: &[Dimension::Stage, Dimension::Probe],
                statistic: "Maximum",
                values: "wall time of the probe's last attempt in milliseconds, connection set-up included",
                help: "One datum per probe per run, published for failures too (time until the failure).",
            },
            CanaryMetric::RunSuccess => Spec {
                name: "RunSuccess",
                unit: "Count",
                dimensions: &[Dimension::Stage],
                statistic: "Average",
                values: "1 when every probe of the run passed, 0 when any failed",
                help: "One datum per run. Average over a window is the canary-success SLI \
                       (slos/relay.yaml); a plain metric, so alarms may look back a day.",
            },
        }
    }
}

/// The values a dimension takes.
#[derive(Debug, Serialize)]
pub struct DimensionSpec {
    pub name: &'static str,
    pub values: Vec<&'static str>,
    pub help: &'static str,
}

/// The whole catalog, as `healthcheck metrics-catalog --format json` prints it.
#[derive(Debug, Serialize)]
pub struct Catalog {
    pub namespace: &'static str,
    pub metrics: Vec<Spec>,
    pub dimensions: Vec<DimensionSpec>,
    pub publishing: &'static str,
}

pub fn catalog() -> Catalog {
    Catalog {
        namespace: NAMESPACE,
        metrics: CanaryMetric::ALL.iter().map(|m| m.spec()).collect(),
        dimensions: vec![
            DimensionSpec {
                name: Dimension::Stage.as_str(),
                values: vec![],
                help: "The run's --stage (HEALTHCHECK_STAGE): local, dev, prod, ... \
                       (1-64 characters of letters, digits, `.`, `_`, `-`).",
            },
            DimensionSpec {
                name: Dimension::Probe.as_str(),
                values: ProbeName::ALL.iter().map(|p| p.as_str()).collect(),
                help: "The probe the datum is about.",
            },
        ],
        publishing: "One PutMetricData call per run (with --cloudwatch, and always in the Lambda): \
                     every per-probe metric for every probe that ran and RunSuccess once, \
                     timestamped at the run's start, standard (60 s) resolution.",
    }
}

/// The catalog as pretty JSON.
pub fn to_json() -> String {
    serde_json::to_string_pretty(&catalog()).unwrap_or_default()
}

/// The catalog as a Markdown table.
pub fn to_markdown() -> String {
    let catalog = catalog();
    let mut out = format!(
        "### Canary metrics (namespace `{}`)\n\n| metric | unit | dimensions | statistic | values |\n|---|---|---|---|---|\n",
        catalog.namespace
    );
    for m in &catalog.metrics {
        let dimensions: Vec<&str> = m.dimensions.iter().map(|d| d.as_str()).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.unit,
            dimensions.join(", "),
            m.statistic,
            m.values
        ));
    }
    out.push('\n');
    for d in &catalog.dimensions {
        if d.values.is_empty() {
            out.push_str(&format!("- `{}`: {}\n", d.name, d.help));
        } else {
            let values: Vec<String> = d.values.iter().map(|v| format!("`{v}`")).collect();
            out.push_str(&format!(
                "- `{}`: {} One of {}.\n",
                d.name,
                d.help,
                values.join(", ")
            ));
        }
    }
    out.push_str(&format!("\n{}\n", catalog.publishing));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_catalog_prints_every_metric_with_its_unit_and_dimensions() {
        let json: serde_json::Value = serde_json::from_str(&to_json()).unwrap();
        assert_eq!(json["namespace"], "Relay/Canary");
        let names: Vec<&str> = json["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Success", "Duration", "RunSuccess"]);
        assert_eq!(
            json["metrics"][2]["dimensions"],
            serde_json::json!(["Stage"])
        );
        assert_eq!(json["metrics"][1]["unit"], "Milliseconds");
        assert_eq!(
            json["metrics"][0]["dimensions"],
            serde_json::json!(["Stage", "Probe"])
        );
        assert_eq!(
            json["dimensions"][1]["values"],
            serde_json::json!(["website", "api-roundtrip", "readyz", "saved", "app-read"])
        );
    }

    #[test]
    fn the_markdown_catalog_is_a_table() {
        let md = to_markdown();
        assert!(
            md.contains("| `Success` | Count | Stage, Probe | Minimum |"),
            "{md}"
        );
        assert!(md.contains("`api-roundtrip`"), "{md}");
    }
}
