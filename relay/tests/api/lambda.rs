//! The Lambda entry, end to end without AWS: the real binary runs under a small stand-in for the Lambda
//! Runtime API (the HTTP protocol the Lambda service speaks to every function), is fed recorded API
//! Gateway HTTP API v2 events, and its answers, EMF metric lines and JSON log lines are checked.

use std::collections::VecDeque;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::mpsc;

#[derive(Clone)]
struct RuntimeApi {
    events: Arc<Mutex<VecDeque<(String, Value)>>>,
    answers: mpsc::UnboundedSender<(String, Value)>,
}

async fn next_invocation(State(api): State<RuntimeApi>) -> Response {
    let next = api.events.lock().unwrap().pop_front();
    let Some((id, event)) = next else {
        // No more events: a real runtime API holds the long poll open, and so do we.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&id).unwrap(),
    );
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-west-2:123456789012:function:relay-dev"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-67891233-abcdef012345678912345678;Sampled=1"),
    );
    (StatusCode::OK, headers, event.to_string()).into_response()
}

async fn invocation_response(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = api.answers.send((id, value));
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let _ = api
        .answers
        .send((id, serde_json::json!({ "runtime_error": body })));
    StatusCode::ACCEPTED
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Run the relay binary as a Lambda function against a Runtime API stand-in that hands it `events`
/// (invocation id, API Gateway event) in turn, with `envs` on top of a Lambda environment; return
/// each invocation's answer, in order, and everything it wrote on stdout.
async fn run_invocations(
    events: Vec<(String, Value)>,
    envs: &[(&str, &str)],
) -> (Vec<(String, Value)>, String) {
    let invocations = events.len();
    let (tx, mut answers) = mpsc::unbounded_channel();
    let api = RuntimeApi {
        events: Arc::new(Mutex::new(events.into())),
        answers: tx,
    };
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runtime_api = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "relay-dev")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]abc")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/relay-dev")
        .env("AWS_REGION", "us-west-2")
        .env("RELAY_STORE", "memory:")
        .env("RELAY_ENV", "dev")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });

    let mut got = Vec::new();
    for _ in 0..invocations {
        let answer = tokio::time::timeout(Duration::from_secs(20), answers.recv())
            .await
            .expect("the function answered")
            .unwrap();
        got.push(answer);
    }
    // Give the last EMF flush a moment to reach stdout, then stop the sandbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    (got, stdout.join().unwrap())
}

#[tokio::test]
async fn api_gateway_events_are_served_with_emf_metrics_and_json_logs() {
    let events = vec![
        ("inv-1".to_owned(), fixture("apigw-v2-post-messages.json")),
        ("inv-2".to_owned(), fixture("apigw-v2-get-count.json")),
        (
            "inv-3".to_owned(),
            fixture("apigw-v2-get-malformed-id.json"),
        ),
    ];
    let (got, stdout) = run_invocations(events, &[]).await;

    assert_eq!(got[0].0, "inv-1");
    assert_eq!(got[0].1["statusCode"], 201, "{}", got[0].1);
    let created: Value = serde_json::from_str(got[0].1["body"].as_str().unwrap()).unwrap();
    assert_eq!(created["message"], "from lambda");
    assert_eq!(got[1].1["statusCode"], 200);
    let count: Value = serde_json::from_str(got[1].1["body"].as_str().unwrap()).unwrap();
    assert_eq!(count["count"], 1);
    assert_eq!(got[2].1["statusCode"], 400);
    let problem: Value = serde_json::from_str(got[2].1["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        problem["request_id"], "BadIdReq1=",
        "in Lambda the request id is API Gateway's"
    );

    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "Request finished.")
        .collect();
    assert_eq!(finished.len(), 3, "{stdout}");
    assert_eq!(finished[0]["request_id"], "PostMsg1Req=");
    assert_eq!(
        finished[0]["cold_start"], true,
        "the first request of a sandbox is its cold start"
    );
    assert_eq!(finished[1]["cold_start"], false);
    // The X-Ray root API Gateway sends is kept, and without a traceparent it is the W3C trace.
    assert_eq!(
        finished[1]["xray_trace_id"], "1-67891233-abcdef012345678912345678",
        "{stdout}"
    );
    assert_eq!(finished[1]["trace_id"], "67891233abcdef012345678912345678");
    assert_eq!(finished[1]["route"], "/messages");
    assert_eq!(finished[0]["env"], "dev");
    assert!(
        lines.iter().any(|l| l["message"] == "Cold start."),
        "{stdout}"
    );

    let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    for doc in &emf {
        let mut names = std::collections::HashSet::new();
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], "Relay");
            let dims = directive["Dimensions"][0].as_array().unwrap();
            assert_eq!(dims[0], "env", "{doc}");
            assert!(dims.len() <= 4, "dimensions kept few: {doc}");
            for dim in dims {
                assert!(
                    doc[dim.as_str().unwrap()].is_string(),
                    "each dimension has its value: {doc}"
                );
            }
            for name in directive["Metrics"].as_array().unwrap() {
                let name = name["Name"].as_str().unwrap();
                assert!(names.insert(name), "{name} twice in one document: {doc}");
                assert!(doc.get(name).is_some(), "each metric has its value: {doc}");
                assert!(
                    relay::telemetry::names::Metric::ALL
                        .iter()
                        .any(|m| m.as_str() == name),
                    "{name} is in the catalog"
                );
            }
        }
        assert!(doc["_aws"]["Timestamp"].is_number());
    }
    // One document per invocation: the request's counters, latency and store timings share it.
    for id in ["inv-2", "inv-3"] {
        let docs = emf.iter().filter(|d| d["RequestId"] == id).count();
        assert_eq!(docs, 1, "{id} wrote one EMF document: {stdout}");
    }
    // Every EMF document names the invocation it was written after, so metrics and lines join.
    let invocations: Vec<&str> = emf
        .iter()
        .map(|d| {
            d["RequestId"]
                .as_str()
                .unwrap_or_else(|| panic!("no RequestId: {d}"))
        })
        .collect();
    for id in ["inv-1", "inv-2", "inv-3"] {
        assert!(
            invocations.contains(&id),
            "{id} has its EMF documents: {stdout}"
        );
    }
    let request_counts: Vec<&&Value> = emf
        .iter()
        .filter(|d| {
            d.get("relay_http_requests_total").is_some()
                && d["route"] == "/messages"
                && d["method"] == "POST"
        })
        .collect();
    assert!(
        !request_counts.is_empty(),
        "the POST was counted with its route and method as dimensions: {stdout}"
    );
    assert_eq!(request_counts[0]["status_class"], "2xx");
    assert_eq!(request_counts[0]["env"], "dev");
    assert!(
        emf.iter()
            .any(|d| d.get("relay_cold_starts_total").is_some()),
        "{stdout}"
    );
}

/// The debug buffer in Lambda, as on a server: with `RUST_LOG=info` and `RELAY_LOG_BUFFER=debug`, an
/// invocation that ends in a 503 (the table's endpoint is dead) writes its DynamoDB call attempts
/// before its request line; one that succeeds (`/healthz`) writes no debug line.
#[tokio::test]
async fn in_lambda_a_failed_invocation_writes_its_debug_buffer_and_a_good_one_none() {
    let dead = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let mut healthz = fixture("apigw-v2-get-count.json");
    healthz["rawPath"] = "/healthz".into();
    healthz["requestContext"]["http"]["path"] = "/healthz".into();
    healthz["requestContext"]["requestId"] = "HealthReq1=".into();
    // No X-Ray header on this one: the runtime's trace id (`_X_AMZN_TRACE_ID`) stands in for it.
    healthz["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-amzn-trace-id");
    let events = vec![
        ("inv-1".to_owned(), fixture("apigw-v2-get-count.json")),
        ("inv-2".to_owned(), healthz),
    ];
    let (got, stdout) = run_invocations(
        events,
        &[
            ("RELAY_STORE", "dynamodb:relay-buffer-test"),
            ("RELAY_DYNAMODB_ENDPOINT", &dead),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("RELAY_LOG_BUFFER", "debug"),
        ],
    )
    .await;
    assert_eq!(got[0].1["statusCode"], 503, "{}", got[0].1);
    assert_eq!(got[1].1["statusCode"], 200, "{}", got[1].1);
    let lines = crate::helpers::parse_lines(&stdout);
    let logged: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_none()).collect();
    let at = |id: &str, message: &str| {
        logged
            .iter()
            .position(|l| l["request_id"] == id && l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} for {id}: {stdout}"))
    };
    let failed = at("CountReq1=", "Request failed.");
    assert_eq!(logged[failed]["flush_buffer"], true);
    let debug: Vec<usize> = (0..logged.len())
        .filter(|&i| logged[i]["level"] == "DEBUG")
        .collect();
    assert!(!debug.is_empty(), "{stdout}");
    assert_eq!(
        debug,
        (failed - debug.len()..failed).collect::<Vec<_>>(),
        "every debug line is the failed request's, right before its request line: {stdout}"
    );
    for &i in &debug {
        let line = logged[i];
        assert_eq!(line["request_id"], "CountReq1=", "{line}");
        assert_eq!(line["message"], "DynamoDB call attempt failed.", "{line}");
        assert_eq!(line["op"], "count_messages", "{line}");
        assert!(
            line["latency_ms"].is_number() && line["error"].is_string(),
            "{line}"
        );
    }
    let finished = at("HealthReq1=", "Request finished.");
    assert!(logged[finished].get("flush_buffer").is_none());
    assert_eq!(
        logged[finished]["xray_trace_id"], "1-67891233-abcdef012345678912345678",
        "{stdout}"
    );
}

/// The `sweep_expired` store lines a relay wrote (at debug).
fn sweeps(stdout: &str) -> usize {
    crate::helpers::parse_lines(stdout)
        .iter()
        .filter(|line| line["op"] == "sweep_expired")
        .count()
}

/// A Lambda sandbox sweeps first one interval after it starts, not during its init and first
/// invocation: with the default 30 s, a sandbox that lives a moment never sweeps; with 100 ms, it has
/// swept by the time it is stopped (the stand-in stops it 300 ms after the answer).
#[tokio::test]
async fn in_lambda_the_first_sweep_waits_one_interval() {
    let event = || vec![("inv-1".to_owned(), fixture("apigw-v2-get-count.json"))];
    let (got, stdout) = run_invocations(event(), &[("RUST_LOG", "debug")]).await;
    assert_eq!(got[0].1["statusCode"], 200, "{}", got[0].1);
    assert!(
        stdout.contains("\"op\":\"count_messages\""),
        "store lines are written at debug: {stdout}"
    );
    assert_eq!(
        sweeps(&stdout),
        0,
        "no sweep within the first 30 s: {stdout}"
    );

    let (got, stdout) = run_invocations(
        event(),
        &[("RUST_LOG", "debug"), ("RELAY_SWEEP_INTERVAL", "100ms")],
    )
    .await;
    assert_eq!(got[0].1["statusCode"], 200, "{}", got[0].1);
    assert!(sweeps(&stdout) >= 1, "swept after 100 ms: {stdout}");
}
