//! Every probe against a healthy relay running in this process: all green, each with what it saw, and
//! nothing left behind. These tests must never inject a fault: faults.rs does that.

use healthcheck::names::ProbeName;
use healthcheck::run_canary;

use crate::helpers::CanaryTarget;
use crate::helpers::{spawn_fake, spawn_relay};

#[tokio::test]
async fn every_probe_passes_against_a_healthy_relay() {
    let relay = spawn_relay().await;
    let report = run_canary(&relay.settings()).await;

    assert!(report.ok, "{}", report.to_json());
    assert_eq!((report.passed, report.failed), (5, 0));
    let names: Vec<ProbeName> = report.probes.iter().map(|p| p.probe).collect();
    assert_eq!(names, ProbeName::ALL);
    for probe in &report.probes {
        assert!(probe.ok, "{probe:?}");
        assert_eq!(probe.failure, None);
        assert_eq!(probe.reason, None);
        assert_eq!(probe.attempts, 1);
        assert!(probe.latency_ms > 0.0 && probe.latency_ms < probe.budget_ms as f64);
        assert!(!probe.steps.is_empty());
    }
    let by_name = |name| report.probes.iter().find(|p| p.probe == name).unwrap();

    let website = by_name(ProbeName::Website);
    assert_eq!(website.status, Some(200));
    let paths: Vec<&str> = website.steps.iter().map(|s| s.path.as_str()).collect();
    assert!(
        paths.contains(&"/assets/app.js") && paths.contains(&"/assets/app.css"),
        "{paths:?}"
    );

    let roundtrip = by_name(ProbeName::ApiRoundtrip);
    let requests: Vec<(String, Option<u16>)> = roundtrip
        .steps
        .iter()
        .map(|s| {
            (
                format!("{} {}", s.method, s.path.split('/').nth(1).unwrap_or("")),
                s.status,
            )
        })
        .collect();
    assert_eq!(
        requests,
        [
            ("POST messages".to_owned(), Some(201)),
            ("GET messages".to_owned(), Some(200)),
            ("GET messages".to_owned(), Some(200)),
            ("DELETE messages".to_owned(), Some(204)),
        ]
    );
    assert!(
        by_name(ProbeName::Readyz)
            .note
            .as_deref()
            .unwrap()
            .starts_with("ready; memory up")
    );
    assert_eq!(
        by_name(ProbeName::Saved).note.as_deref(),
        Some("shows \"dynamic string\"")
    );
    assert_eq!(
        by_name(ProbeName::AppRead).note.as_deref(),
        Some("empty log")
    );
}

#[tokio::test]
async fn the_relay_echoes_each_probes_own_request_id() {
    let relay = spawn_relay().await;
    let report = run_canary(&relay.settings()).await;
    let mut sent: Vec<&str> = Vec::new();
    for probe in &report.probes {
        let id = probe.request_id_sent.as_str();
        assert!(
            id.starts_with("canary-") && id.len() == "canary-".len() + 36,
            "{id}"
        );
        assert_eq!(
            probe.request_id.as_deref(),
            Some(id),
            "the relay keeps a well-formed id"
        );
        for step in &probe.steps {
            assert_eq!(step.request_id.as_deref(), Some(id), "{step:?}");
        }
        sent.push(id);
    }
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(sent.len(), 5, "one id per probe");
}

#[tokio::test]
async fn the_round_trip_leaves_no_message_behind() {
    let relay = spawn_relay().await;
    for _ in 0..3 {
        assert!(run_canary(&relay.settings()).await.ok);
    }
    assert_eq!(relay.store.count_messages().await.unwrap(), 0);
}

#[tokio::test]
async fn every_request_carries_the_probe_request_id_header() {
    let (addr, seen) = spawn_fake(vec![]).await;
    let report = run_canary(&crate::helpers::settings_for(addr)).await;
    assert!(report.ok, "the fake relay is healthy: {}", report.to_json());
    let requests = seen.requests();
    assert_eq!(requests.len(), 10, "{requests:?}");
    let mut parents = std::collections::HashSet::new();
    for (method, path, id, traceparent) in requests {
        let id = id.unwrap_or_else(|| panic!("{method} {path} carried no x-request-id"));
        let probe = report
            .probes
            .iter()
            .find(|p| p.request_id_sent == id)
            .unwrap_or_else(|| panic!("{method} {path}: {id} belongs to no probe"));
        // A valid traceparent in the probe's trace, with a parent span of its own per request.
        let traceparent = traceparent.unwrap_or_else(|| panic!("{method} {path}: no traceparent"));
        let parsed = telemetry_core::trace::TraceParent::parse(&traceparent)
            .unwrap_or_else(|| panic!("{method} {path}: invalid traceparent {traceparent:?}"));
        assert_eq!(
            parsed.trace_id.to_string(),
            probe.trace_id,
            "{method} {path}"
        );
        assert!(
            parents.insert(parsed.parent_id),
            "{method} {path}: a span id used twice"
        );
    }
    let mut traces: Vec<&str> = report.probes.iter().map(|p| p.trace_id.as_str()).collect();
    traces.sort_unstable();
    traces.dedup();
    assert_eq!(traces.len(), report.probes.len(), "one trace per probe");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap_or_default();
    for probe in json["probes"].as_array().into_iter().flatten() {
        assert!(
            probe["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{probe}"
        );
    }
}
