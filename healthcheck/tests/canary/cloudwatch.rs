//! Publishing to CloudWatch, verified against the local AWS-API server (`AWS_ENDPOINT_URL`): one
//! PutMetricData call per run, and the data read back with GetMetricData and ListMetrics carry the
//! right values, units and dimensions. These tests fail, never skip, when the server is not running, and
//! never publish anywhere but to it (each run uses its own `Stage`, so runs never read each other's data).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatch::error::BoxError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat};
use healthcheck::catalog::NAMESPACE;
use healthcheck::names::ProbeName;
use healthcheck::publish::Publisher;
use healthcheck::run_canary;
use tokio::process::Command;

use crate::helpers::CanaryTarget;
use crate::helpers::{aws_endpoint, spawn_relay, unique_stage};

/// Counts the HTTP requests the SDK actually sends (retries included).
#[derive(Debug, Clone, Default)]
struct CountRequests(Arc<AtomicUsize>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A client for the local AWS-API server, and a count of the requests it sends.
async fn local_client() -> (Client, CountRequests) {
    let endpoint = aws_endpoint();
    assert!(
        std::env::var_os("AWS_REGION").is_some()
            || std::env::var_os("AWS_DEFAULT_REGION").is_some(),
        "AWS_REGION is unset: scripts/aws-local.sh start exports it with AWS_ENDPOINT_URL"
    );
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let counter = CountRequests::default();
    let config = aws_sdk_cloudwatch::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .interceptor(counter.clone())
        .build();
    (Client::from_conf(config), counter)
}

/// The values of one canary metric for one stage and probe over the last ten minutes.
async fn read_back(
    client: &Client,
    stage: &str,
    probe: ProbeName,
    metric: &str,
    stat: &str,
) -> Vec<f64> {
    read_series(client, stage, Some(probe), metric, stat).await
}

/// The values of one canary metric for one stage (and probe, for per-probe metrics).
async fn read_series(
    client: &Client,
    stage: &str,
    probe: Option<ProbeName>,
    metric: &str,
    stat: &str,
) -> Vec<f64> {
    let now = chrono::Utc::now().timestamp();
    let mut series = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric)
        .dimensions(Dimension::builder().name("Stage").value(stage).build());
    if let Some(probe) = probe {
        series = series.dimensions(
            Dimension::builder()
                .name("Probe")
                .value(probe.as_str())
                .build(),
        );
    }
    let query = MetricDataQuery::builder()
        .id("m")
        .metric_stat(
            MetricStat::builder()
                .metric(series.build())
                .period(60)
                .stat(stat)
                .build(),
        )
        .build();
    let output = client
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(DateTime::from_secs(now - 600))
        .end_time(DateTime::from_secs(now + 120))
        .send()
        .await
        .expect("GetMetricData");
    output
        .metric_data_results()
        .iter()
        .flat_map(|r| r.values().to_vec())
        .collect()
}

/// Every metric of `stage` in the canary namespace, as (name, [(dimension, value)]).
async fn list(client: &Client, stage: &str) -> Vec<(String, Vec<(String, String)>)> {
    let output = client
        .list_metrics()
        .namespace(NAMESPACE)
        .dimensions(
            DimensionFilter::builder()
                .name("Stage")
                .value(stage)
                .build(),
        )
        .send()
        .await
        .expect("ListMetrics");
    let mut metrics: Vec<(String, Vec<(String, String)>)> = output
        .metrics()
        .iter()
        .map(|m| {
            let mut dims: Vec<(String, String)> = m
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or("").to_owned(),
                        d.value().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            dims.sort();
            (m.metric_name().unwrap_or("").to_owned(), dims)
        })
        .collect();
    metrics.sort();
    metrics
}

#[tokio::test]
async fn a_run_is_published_in_one_call_and_reads_back_with_its_dimensions() {
    let (client, requests) = local_client().await;
    let relay = spawn_relay().await;
    let stage = unique_stage("test");
    let mut settings = relay.settings();
    settings.stage = stage.parse().unwrap();
    let report = run_canary(&settings).await;
    assert!(report.ok, "{}", report.to_json());

    let published = Publisher::new(client.clone())
        .publish(&report)
        .await
        .unwrap();
    assert_eq!(
        published, 11,
        "Success and Duration for 5 probes, RunSuccess once"
    );
    assert_eq!(
        requests.0.load(Ordering::SeqCst),
        1,
        "one batched PutMetricData call"
    );

    for result in &report.probes {
        let success = read_back(&client, &stage, result.probe, "Success", "Minimum").await;
        assert_eq!(success, [1.0], "{}", result.probe);
        let duration = read_back(&client, &stage, result.probe, "Duration", "Average").await;
        assert_eq!(duration.len(), 1, "{}: {duration:?}", result.probe);
        assert!(
            (duration[0] - result.latency_ms).abs() < 1e-6,
            "{}: published {} ms, measured {} ms",
            result.probe,
            duration[0],
            result.latency_ms
        );
    }

    assert_eq!(
        read_series(&client, &stage, None, "RunSuccess", "Average").await,
        [1.0],
        "the run passed"
    );
    let metrics = list(&client, &stage).await;
    assert_eq!(metrics.len(), 11, "{metrics:?}");
    assert!(
        metrics.contains(&(
            "RunSuccess".to_owned(),
            vec![("Stage".to_owned(), stage.clone())]
        )),
        "RunSuccess with Stage alone: {metrics:?}"
    );
    for probe in ProbeName::ALL {
        for name in ["Duration", "Success"] {
            let dims = vec![
                ("Probe".to_owned(), probe.as_str().to_owned()),
                ("Stage".to_owned(), stage.clone()),
            ];
            assert!(
                metrics.contains(&(name.to_owned(), dims)),
                "{name} for {probe} with exactly Stage and Probe: {metrics:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_probe_publishes_success_zero_and_its_duration() {
    let (client, _) = local_client().await;
    let relay = spawn_relay().await;
    let stage = unique_stage("down");
    let mut settings = relay.settings();
    settings.stage = stage.parse().unwrap();
    settings.probes = vec![ProbeName::Readyz];
    relay.shutdown().await;

    let report = run_canary(&settings).await;
    assert!(!report.ok);
    Publisher::new(client.clone())
        .publish(&report)
        .await
        .unwrap();
    assert_eq!(
        read_back(&client, &stage, ProbeName::Readyz, "Success", "Maximum").await,
        [0.0]
    );
    assert_eq!(
        read_back(&client, &stage, ProbeName::Readyz, "Duration", "Average").await,
        [report.probes[0].latency_ms]
    );
    assert_eq!(
        read_series(&client, &stage, None, "RunSuccess", "Maximum").await,
        [0.0],
        "a run with a failed probe failed"
    );
    assert_eq!(
        list(&client, &stage).await.len(),
        3,
        "only the probes that ran, and the run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_publishes_with_the_cloudwatch_flag() {
    let (client, _) = local_client().await;
    let relay = spawn_relay().await;
    let stage = unique_stage("cli");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_healthcheck"))
            .args([
                "--target",
                &relay.url(""),
                "--stage",
                &stage,
                "--cloudwatch",
                "--color",
                "never",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "CloudWatch: 11 data points in Relay/Canary (Stage={stage})"
        )),
        "{stdout}"
    );
    for probe in ProbeName::ALL {
        assert_eq!(
            read_back(&client, &stage, probe, "Success", "Minimum").await,
            [1.0],
            "{probe}"
        );
    }
}

#[cfg(feature = "lambda")]
#[tokio::test]
async fn the_lambda_handler_publishes_every_run() {
    use healthcheck::lambda::{Canary, ScheduledEvent, handler};
    use lambda_runtime::{Context, LambdaEvent};

    let (client, requests) = local_client().await;
    let relay = spawn_relay().await;
    let stage = unique_stage("lambda");
    let mut settings = relay.settings();
    settings.stage = stage.parse().unwrap();
    let canary = Canary {
        settings,
        publisher: Some(Publisher::new(client.clone())),
    };
    let event = LambdaEvent::new(ScheduledEvent::default(), Context::default());
    let invocation = handler(event, &canary).await.unwrap();
    assert!(invocation.ok);
    assert_eq!(invocation.published, 11);
    assert_eq!(requests.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        read_back(
            &client,
            &stage,
            ProbeName::ApiRoundtrip,
            "Success",
            "Minimum"
        )
        .await,
        [1.0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exits_two_when_cloudwatch_refuses_the_data() {
    // A port nothing listens on: the canary itself is broken, the relay is fine.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let relay = spawn_relay().await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_healthcheck"))
            .args([
                "--target",
                &relay.url(""),
                "--cloudwatch",
                "--color",
                "never",
            ])
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-west-2")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("healthcheck: PutMetricData to CloudWatch failed"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("✓ 5 of 5 probes passed"));
}
