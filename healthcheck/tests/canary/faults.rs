//! Faults injected one at a time: a stopped relay, a closed store, slow answers, 500s, wrong bodies and
//! content types. Each probe must report the right failure kind, status and a reason that names the
//! request and what was wrong. Each probe meets at most one fault per test, so a failure points at one cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use healthcheck::names::Budgets;
use healthcheck::names::{FailureKind, ProbeName};
use healthcheck::outcome::ProbeResult;
use healthcheck::{Report, run_canary};
use serde_json::{Value, json};

use crate::helpers::CanaryTarget;
use crate::helpers::{
    problem, settings_for, slow, spawn_fake, spawn_relay, spawn_relay_with, temp_sqlite, typed,
};

fn probe(report: &Report, name: ProbeName) -> &ProbeResult {
    report
        .probes
        .iter()
        .find(|p| p.probe == name)
        .unwrap_or_else(|| panic!("no {name} in {}", report.to_json()))
}

fn reason(result: &ProbeResult) -> &str {
    result.reason.as_deref().unwrap_or("")
}

#[tokio::test]
async fn a_stopped_relay_fails_every_probe_with_connection_refused() {
    let relay = spawn_relay().await;
    let settings = relay.settings();
    relay.shutdown().await;

    let report = run_canary(&settings).await;
    assert!(!report.ok);
    assert_eq!((report.passed, report.failed), (0, 5));
    for result in &report.probes {
        assert!(!result.ok);
        assert_eq!(result.failure, Some(FailureKind::Connect), "{result:?}");
        assert_eq!(result.status, None, "no response, no status");
        assert_eq!(result.request_id, None, "no response, no request id back");
        assert!(
            reason(result).contains("cannot connect to 127.0.0.1:")
                && reason(result).contains("Connection refused"),
            "{}",
            reason(result)
        );
    }
    assert!(reason(probe(&report, ProbeName::Readyz)).starts_with("GET /readyz: cannot connect"));
    assert!(
        reason(probe(&report, ProbeName::ApiRoundtrip))
            .starts_with("POST /messages: cannot connect")
    );
}

#[tokio::test]
async fn a_closed_store_turns_readyz_red_with_the_relays_reason() {
    let (_dir, uri) = temp_sqlite();
    let relay = spawn_relay_with(|c| c.store = uri).await;
    assert!(
        run_canary(&relay.settings()).await.ok,
        "green before the fault"
    );
    relay.store.close().await;

    let report = run_canary(&relay.settings()).await;
    assert!(!report.ok);
    let readyz = probe(&report, ProbeName::Readyz);
    assert_eq!(readyz.failure, Some(FailureKind::Status));
    assert_eq!(readyz.status, Some(503));
    assert!(
        reason(readyz).starts_with(
            "GET /readyz answered 503 Service Unavailable, expected 200 OK: the store is down"
        ),
        "{}",
        reason(readyz)
    );
    assert_eq!(
        readyz.request_id.as_deref(),
        Some(readyz.request_id_sent.as_str()),
        "the failing response's request id is recorded"
    );
    let roundtrip = probe(&report, ProbeName::ApiRoundtrip);
    assert_eq!(roundtrip.failure, Some(FailureKind::Status));
    assert_eq!(roundtrip.status, Some(503));
    assert!(
        reason(roundtrip).starts_with("POST /messages answered 503"),
        "{}",
        reason(roundtrip)
    );
    assert!(
        probe(&report, ProbeName::Website).ok,
        "the web app needs no store"
    );
}

#[tokio::test]
async fn a_slow_success_beyond_its_budget_is_a_failure() {
    let (addr, _) = spawn_fake(vec![(
        "/readyz",
        slow(
            Duration::from_millis(300),
            "application/json",
            r#"{"status":"ready"}"#,
        ),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.budgets = Budgets {
        readyz: Duration::from_millis(100),
        ..Budgets::default()
    };

    let report = run_canary(&settings).await;
    assert!(!report.ok);
    assert_eq!(
        report.failed,
        1,
        "only the slow probe fails: {}",
        report.to_json()
    );
    let readyz = probe(&report, ProbeName::Readyz);
    assert_eq!(readyz.failure, Some(FailureKind::OverBudget));
    assert_eq!(readyz.status, Some(200), "the answer itself was right");
    assert!(readyz.latency_ms >= 300.0, "{}", readyz.latency_ms);
    assert!(
        reason(readyz).contains("over its 100 ms budget (slowest: GET /readyz in 3"),
        "{}",
        reason(readyz)
    );
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_a_timeout() {
    let (addr, _) = spawn_fake(vec![(
        "/saved",
        slow(
            Duration::from_secs(3),
            "text/html",
            "<h1>The saved string is x</h1>",
        ),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Saved];
    settings.timeout = Duration::from_millis(200);

    let report = run_canary(&settings).await;
    let saved = probe(&report, ProbeName::Saved);
    assert_eq!(saved.failure, Some(FailureKind::Timeout));
    assert_eq!(saved.status, None);
    assert_eq!(
        reason(saved),
        "GET /saved: no response within 200 ms (the timeout)"
    );
    assert!(
        saved.latency_ms < 1000.0,
        "the timeout cut it short: {}",
        saved.latency_ms
    );
}

#[tokio::test]
async fn a_500_fails_with_the_problem_detail_and_cleans_up_nothing_it_did_not_create() {
    let (addr, seen) = spawn_fake(vec![(
        "/messages",
        post(|| async { problem(StatusCode::INTERNAL_SERVER_ERROR, "the disk is full") }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::ApiRoundtrip];

    let report = run_canary(&settings).await;
    let roundtrip = probe(&report, ProbeName::ApiRoundtrip);
    assert_eq!(roundtrip.failure, Some(FailureKind::Status));
    assert_eq!(roundtrip.status, Some(500));
    assert_eq!(
        reason(roundtrip),
        "POST /messages answered 500 Internal Server Error, expected 201 Created: the disk is full"
    );
    let methods: Vec<String> = seen.requests().into_iter().map(|(m, _, _, _)| m).collect();
    assert_eq!(
        methods,
        ["POST"],
        "nothing was created, so nothing is deleted"
    );
}

#[tokio::test]
async fn a_read_back_that_differs_fails_and_the_message_is_still_deleted() {
    let (addr, seen) = spawn_fake(vec![(
        "/messages/{id}",
        get(|| async {
            typed(
                "application/json",
                r#"{"id":"0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b","message":"someone else's"}"#,
            )
        })
        .delete(|| async { StatusCode::NO_CONTENT }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::ApiRoundtrip];

    let report = run_canary(&settings).await;
    let roundtrip = probe(&report, ProbeName::ApiRoundtrip);
    assert_eq!(roundtrip.failure, Some(FailureKind::Mismatch));
    assert_eq!(roundtrip.status, Some(200));
    assert!(
        reason(roundtrip).starts_with(
            "GET /messages/0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b: read back id 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b and message \"someone else's\""
        ),
        "{}",
        reason(roundtrip)
    );
    let requests: Vec<String> = seen
        .requests()
        .into_iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        requests.last().map(String::as_str),
        Some("DELETE /messages/0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"),
        "the canary cleans up after a failure: {requests:?}"
    );
}

/// A relay whose round trip is right except its count: `GET /messages` answers each of `counts` in
/// turn (the last one from then on).
fn counting_relay(counts: &'static [u64]) -> Vec<(&'static str, MethodRouter)> {
    const ID: &str = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
    let posted: Arc<std::sync::Mutex<String>> = Arc::default();
    let (on_post, on_get) = (posted.clone(), posted);
    let reads = Arc::new(AtomicUsize::new(0));
    let resource =
        |text: String| json!({"id": ID, "message": text, "created_at": "x", "expires_at": "y"});
    vec![
        (
            "/messages",
            post(move |body: axum::Json<Value>| async move {
                let text = body["message"].as_str().unwrap_or_default().to_owned();
                *on_post.lock().unwrap() = text.clone();
                let location = [(axum::http::header::LOCATION, format!("/messages/{ID}"))];
                (StatusCode::CREATED, location, axum::Json(resource(text)))
            })
            .get(move || async move {
                let read = reads.fetch_add(1, Ordering::SeqCst).min(counts.len() - 1);
                axum::Json(json!({"count": counts[read]}))
            }),
        ),
        (
            "/messages/{id}",
            get(move || async move { axum::Json(resource(on_get.lock().unwrap().clone())) })
                .delete(|| async { StatusCode::NO_CONTENT }),
        ),
    ]
}

fn requests_of(seen: &crate::helpers::Seen) -> Vec<String> {
    seen.requests()
        .into_iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect()
}

/// A count that does not include the canary's message yet (the relay reads it eventually
/// consistent on DynamoDB) is read once more after a pause, and then it passes.
#[tokio::test]
async fn a_count_of_0_is_read_again_and_passes_once_it_includes_the_message() {
    let (addr, seen) = spawn_fake(counting_relay(&[0, 1])).await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::ApiRoundtrip];

    let report = run_canary(&settings).await;
    let roundtrip = probe(&report, ProbeName::ApiRoundtrip);
    assert!(roundtrip.ok, "{}", report.to_json());
    assert_eq!(
        roundtrip.note.as_deref(),
        Some("created, read back, counted (1), deleted")
    );
    let counts = requests_of(&seen)
        .into_iter()
        .filter(|r| r == "GET /messages")
        .count();
    assert_eq!(counts, 2, "{:?}", requests_of(&seen));
}

/// A count still 0 when read again fails the round trip, and the message is still deleted.
#[tokio::test]
async fn a_count_still_0_when_read_again_fails_and_the_message_is_deleted() {
    let (addr, seen) = spawn_fake(counting_relay(&[0])).await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::ApiRoundtrip];

    let report = run_canary(&settings).await;
    let roundtrip = probe(&report, ProbeName::ApiRoundtrip);
    assert_eq!(roundtrip.failure, Some(FailureKind::Mismatch));
    assert_eq!(
        reason(roundtrip),
        "GET /messages: the count is 0 while the canary's message exists (read twice, 500 ms apart)"
    );
    let requests = requests_of(&seen);
    assert_eq!(
        requests.iter().filter(|r| *r == "GET /messages").count(),
        2,
        "{requests:?}"
    );
    assert_eq!(
        requests.last().map(String::as_str),
        Some("DELETE /messages/0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn the_website_fails_when_an_asset_has_the_wrong_content_type() {
    // The classic single-page-app fallback: every unknown path answers with the HTML page.
    let (addr, _) = spawn_fake(vec![(
        "/assets/app.js",
        get(|| async { typed("text/html; charset=utf-8", "<!doctype html><html></html>") }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Website];

    let report = run_canary(&settings).await;
    let website = probe(&report, ProbeName::Website);
    assert_eq!(website.failure, Some(FailureKind::ContentType));
    assert_eq!(website.status, Some(200));
    assert_eq!(
        reason(website),
        "GET /assets/app.js has content-type text/html; charset=utf-8, expected text/javascript or application/javascript"
    );
}

#[tokio::test]
async fn the_website_fails_when_an_asset_is_missing() {
    let (addr, _) = spawn_fake(vec![(
        "/assets/app.css",
        get(|| async { (StatusCode::NOT_FOUND, "no such file").into_response() }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Website];

    let website = run_canary(&settings).await.probes.remove(0);
    assert_eq!(website.failure, Some(FailureKind::Status));
    assert_eq!(website.status, Some(404));
    assert_eq!(
        reason(&website),
        "GET /assets/app.css answered 404 Not Found, expected 200 OK: body starts \"no such file\""
    );
}

#[tokio::test]
async fn the_website_fails_when_the_page_is_not_the_app() {
    let (addr, _) = spawn_fake(vec![(
        "/",
        get(|| async { typed("text/html", "<html><body>It works!</body></html>") }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Website];
    let website = run_canary(&settings).await.probes.remove(0);
    assert_eq!(website.failure, Some(FailureKind::Mismatch));
    assert_eq!(
        reason(&website),
        "GET /: the page does not reference /assets/app.js (it references no /assets/ file)"
    );

    let (addr, _) = spawn_fake(vec![(
        "/",
        get(|| async { typed("application/json", "{}") }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Website];
    let website = run_canary(&settings).await.probes.remove(0);
    assert_eq!(website.failure, Some(FailureKind::ContentType));
    assert_eq!(
        reason(&website),
        "GET / has content-type application/json, expected text/html"
    );
}

#[tokio::test]
async fn wrong_bodies_fail_readyz_saved_and_app_read_precisely() {
    let (addr, _) = spawn_fake(vec![
        ("/readyz", get(|| async { typed("text/plain", "OK") })),
        (
            "/saved",
            get(|| async { typed("text/html", "<html><h1>Welcome</h1></html>") }),
        ),
        (
            "/app",
            get(|| async {
                typed(
                    "application/json",
                    r#"{"count":2,"timestamps":["yesterday"]}"#,
                )
            }),
        ),
    ])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Readyz, ProbeName::Saved, ProbeName::AppRead];
    let report = run_canary(&settings).await;
    assert_eq!(report.failed, 3, "{}", report.to_json());

    let readyz = probe(&report, ProbeName::Readyz);
    assert_eq!(readyz.failure, Some(FailureKind::ContentType));
    assert_eq!(
        reason(readyz),
        "GET /readyz has content-type text/plain, expected application/json"
    );

    let saved = probe(&report, ProbeName::Saved);
    assert_eq!(saved.failure, Some(FailureKind::Body));
    assert_eq!(
        reason(saved),
        "GET /saved: the page has no `<h1>The saved string is…</h1>` heading (body starts \"<html><h1>Welcome</h1></html>\")"
    );

    let app = probe(&report, ProbeName::AppRead);
    assert_eq!(app.failure, Some(FailureKind::Mismatch));
    assert_eq!(
        reason(app),
        "GET /app?limit=1: count is 2 but the first page of 1 has no next_cursor"
    );
}

#[tokio::test]
async fn a_readiness_document_that_is_not_ready_fails() {
    let (addr, _) = spawn_fake(vec![(
        "/readyz",
        get(|| async { typed("application/json", r#"{"status":"starting"}"#) }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Readyz];
    let readyz = run_canary(&settings).await.probes.remove(0);
    assert_eq!(readyz.failure, Some(FailureKind::Mismatch));
    assert_eq!(
        reason(&readyz),
        "GET /readyz: status is \"starting\", expected \"ready\""
    );
}

#[tokio::test]
async fn retries_are_off_by_default_and_reported_when_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (addr, _) = spawn_fake(vec![(
        "/readyz",
        get(move || {
            let calls = counter.clone();
            async move {
                // The first two calls fail, later ones succeed.
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    problem(StatusCode::SERVICE_UNAVAILABLE, "warming up")
                } else {
                    typed("application/json", r#"{"status":"ready"}"#)
                }
            }
        }),
    )])
    .await;
    let mut settings = settings_for(addr);
    settings.probes = vec![ProbeName::Readyz];

    let once = run_canary(&settings).await.probes.remove(0);
    assert!(!once.ok, "without retries the first failure stands");
    assert_eq!(once.attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    settings.retries = 1;
    settings.retry_delay = Duration::from_millis(10);
    let retried = run_canary(&settings).await.probes.remove(0);
    assert!(retried.ok, "{retried:?}");
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.earlier_failures.len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(
        retried.earlier_failures[0].ends_with(": warming up"),
        "{:?}",
        retried.earlier_failures
    );
}
