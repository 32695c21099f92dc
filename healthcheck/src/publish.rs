//! Publish a run to CloudWatch: `Success` (0/1) and `Duration` (ms) for every probe that ran, with the
//! dimensions `Stage` and `Probe`, and `RunSuccess` (0/1, all probes passed) with `Stage` alone, in one
//! PutMetricData call. Every name, unit and dimension comes from `catalog.rs`.
//!
//! It must never publish more than once per run (a retry of the whole call aside, which the SDK's own
//! bounded retry policy does) and never invent a metric the catalog does not list.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension as CwDimension, MetricDatum, StandardUnit};

use crate::catalog::{CanaryMetric, Dimension, NAMESPACE};
use crate::outcome::ProbeResult;
use crate::report::Report;

/// Standard resolution: the canary runs once a minute, and high resolution costs more.
const STORAGE_RESOLUTION: i32 = 60;

/// A CloudWatch client for the canary's metrics.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("PutMetricData to CloudWatch failed: {0}")]
    PutMetricData(String),
}

impl Publisher {
    /// A publisher from the standard AWS configuration chain: `AWS_REGION`, credentials from the
    /// environment, profile or Lambda role, and `AWS_ENDPOINT_URL` for a local AWS-API server.
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config))
    }

    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Publish the run in one PutMetricData call; returns how many data points were sent.
    pub async fn publish(&self, report: &Report) -> Result<usize, PublishError> {
        let data = metric_data(report);
        let count = data.len();
        if count == 0 {
            return Ok(0);
        }
        self.client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(data))
            .send()
            .await
            .map_err(|e| {
                PublishError::PutMetricData(
                    aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        Ok(count)
    }
}

/// The data points of a run: for each probe, one per per-probe catalog metric, and one per run-level
/// metric (well within PutMetricData's 1000-datum limit). A run without probes publishes nothing.
pub fn metric_data(report: &Report) -> Vec<MetricDatum> {
    if report.probes.is_empty() {
        return Vec::new();
    }
    let mut data = Vec::with_capacity(report.probes.len() * CanaryMetric::ALL.len());
    for metric in CanaryMetric::ALL {
        if metric.per_probe() {
            for probe in &report.probes {
                let value = match metric {
                    CanaryMetric::Duration => probe.latency_ms,
                    _ => f64::from(u8::from(probe.ok)),
                };
                data.push(datum(metric, report, Some(probe), value));
            }
        } else {
            let passed = report.probes.iter().all(|p| p.ok);
            data.push(datum(metric, report, None, f64::from(u8::from(passed))));
        }
    }
    data
}

fn datum(
    metric: CanaryMetric,
    report: &Report,
    probe: Option<&ProbeResult>,
    value: f64,
) -> MetricDatum {
    let spec = metric.spec();
    let dimensions = spec
        .dimensions
        .iter()
        .filter_map(|d| {
            let value = match d {
                Dimension::Stage => Some(report.stage.as_str()),
                Dimension::Probe => probe.map(|p| p.probe.as_str()),
            }?;
            Some(CwDimension::builder().name(d.as_str()).value(value).build())
        })
        .collect();
    MetricDatum::builder()
        .metric_name(spec.name)
        .set_dimensions(Some(dimensions))
        .value(value)
        .unit(StandardUnit::from(spec.unit))
        .timestamp(DateTime::from_millis(report.started_at.timestamp_millis()))
        .storage_resolution(STORAGE_RESOLUTION)
        .build()
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

    fn probe(name: ProbeName, ok: bool, latency_ms: f64) -> ProbeResult {
        ProbeResult {
            probe: name,
            ok,
            status: Some(200),
            latency_ms,
            budget_ms: 1000,
            failure: (!ok).then_some(FailureKind::OverBudget),
            reason: None,
            note: None,
            request_id_sent: "canary-x".into(),
            request_id: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            attempts: 1,
            earlier_failures: vec![],
            steps: vec![],
        }
    }

    #[test]
    fn every_probe_gets_success_and_duration_with_stage_and_probe() {
        let mut settings = Settings::new("http://127.0.0.1:1".parse().unwrap());
        settings.stage = "prod".parse().unwrap();
        let report = Report::new(
            &settings,
            Utc::now(),
            Duration::from_millis(5),
            vec![
                probe(ProbeName::Website, true, 12.5),
                probe(ProbeName::Readyz, false, 1500.0),
            ],
        );
        let data = metric_data(&report);
        assert_eq!(data.len(), 5);
        let run = data
            .iter()
            .find(|d| d.metric_name() == Some("RunSuccess"))
            .unwrap();
        assert_eq!(run.value(), Some(0.0), "one probe failed, so the run did");
        let run_dims: Vec<_> = run.dimensions().iter().map(|d| d.name().unwrap()).collect();
        assert_eq!(run_dims, ["Stage"]);
        let find = |name: &str, probe: &str| {
            data.iter()
                .find(|d| {
                    d.metric_name() == Some(name)
                        && d.dimensions()
                            .iter()
                            .any(|x| x.name() == Some("Probe") && x.value() == Some(probe))
                })
                .unwrap()
        };
        let success = find("Success", "readyz");
        assert_eq!(success.value(), Some(0.0));
        assert_eq!(success.unit(), Some(&StandardUnit::Count));
        let dims: Vec<(&str, &str)> = success
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap(), d.value().unwrap()))
            .collect();
        assert_eq!(dims, [("Stage", "prod"), ("Probe", "readyz")]);
        assert_eq!(find("Success", "website").value(), Some(1.0));
        let duration = find("Duration", "website");
        assert_eq!(duration.value(), Some(12.5));
        assert_eq!(duration.unit(), Some(&StandardUnit::Milliseconds));
        assert_eq!(
            duration.timestamp().map(|t| t.to_millis().unwrap()),
            Some(report.started_at.timestamp_millis())
        );
    }

    #[test]
    fn a_run_whose_probes_all_passed_succeeds_and_every_datum_has_its_catalog_dimensions() {
        let settings = Settings::new("http://127.0.0.1:1".parse().unwrap());
        let report = Report::new(
            &settings,
            Utc::now(),
            Duration::from_millis(5),
            vec![
                probe(ProbeName::Website, true, 1.0),
                probe(ProbeName::Saved, true, 2.0),
            ],
        );
        let data = metric_data(&report);
        for d in &data {
            let metric = CanaryMetric::ALL
                .into_iter()
                .find(|m| Some(m.as_str()) == d.metric_name())
                .unwrap();
            let names: Vec<_> = d.dimensions().iter().map(|x| x.name().unwrap()).collect();
            let want: Vec<_> = metric
                .spec()
                .dimensions
                .iter()
                .map(|x| x.as_str())
                .collect();
            assert_eq!(names, want, "{:?}", d.metric_name());
        }
        let run: Vec<_> = data
            .iter()
            .filter(|d| d.metric_name() == Some("RunSuccess"))
            .collect();
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].value(), Some(1.0));
        let empty = Report::new(&settings, Utc::now(), Duration::from_millis(1), vec![]);
        assert!(metric_data(&empty).is_empty());
    }

    #[test]
    fn catalog_units_are_cloudwatch_units() {
        for metric in CanaryMetric::ALL {
            let unit = StandardUnit::from(metric.spec().unit);
            assert!(
                StandardUnit::values().contains(&unit.as_str()),
                "{} has unit {:?}",
                metric.as_str(),
                metric.spec().unit
            );
        }
    }
}
