//! `/healthz`, `/readyz`, `/metrics`, and what a broken store looks like from outside.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app, spawn_with, temp_sqlite};

#[tokio::test]
async fn healthz_and_readyz_are_green_on_a_healthy_store() {
    let (_dir, uri) = temp_sqlite();
    let app = spawn_with(|c| c.store = uri).await;
    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["store"]["status"], "up");
    assert_eq!(ready["checks"]["store"]["backend"], "sqlite");
}

#[tokio::test]
async fn a_closed_store_turns_readiness_red_and_writes_into_503s() {
    let (_dir, uri) = temp_sqlite();
    let app = spawn_with(|c| c.store = uri).await;
    let created = app.create("before", None).await;
    app.store.close().await;

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "not-ready").await;
    assert_eq!(body["checks"]["store"]["status"], "down");

    let write = app.post_message(json!({"message": "after"})).await;
    assert!(
        write.headers().contains_key("retry-after"),
        "503s say when to retry"
    );
    assert_problem(write, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let update = app
        .put_json(
            &format!("/messages/{}", created["id"].as_str().unwrap()),
            json!({"message": "x"}),
        )
        .await;
    assert_problem(update, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness is not readiness"
    );
}

#[tokio::test]
async fn metrics_use_route_templates_never_raw_paths_or_ids() {
    let app = spawn_app().await;
    let created = app.create("metric me", None).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.get(&format!("/messages/{id}")).await;
    app.get("/messages/not-a-uuid").await;
    app.get("/no/such/route/abc123").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"relay_http_requests_total{route="/messages/{id}",method="GET",status_class="2xx"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(text.contains("relay_messages_created_total"), "{text}");
    assert!(
        text.contains("relay_store_operation_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("# HELP relay_http_requests_total"), "{text}");
    assert!(!text.contains(&id), "no message id in any label");
    assert!(
        !text.contains("not-a-uuid") && !text.contains("abc123"),
        "no raw path in any label"
    );
}

#[tokio::test]
async fn shutdown_stops_serving_and_closes_the_store() {
    let (_dir, uri) = temp_sqlite();
    let app = spawn_with(|c| c.store = uri).await;
    let addr = app.addr;
    let store = app.store.clone();
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    app.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
    assert!(store.ping().await.is_err(), "the store is closed");
}

/// `relay_store_operation_duration_seconds_count` for `backend`'s pings, from a fresh scrape.
async fn pings(app: &crate::helpers::TestApp, backend: &str) -> u64 {
    // Past the scrape cache's second, so this scrape is rendered now.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("relay_store_operation_duration_seconds_count")
                && l.contains(&format!(r#"backend="{backend}""#))
                && l.contains(r#"op="ping""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ping count in\n{text}"))
}

/// A flood of readiness probes shares one store check a second: probes cannot load the store.
#[tokio::test]
async fn a_readiness_flood_costs_the_store_one_check_a_second() {
    let app = spawn_app().await;
    let before = pings(&app, "memory").await;
    for (status, _) in flood(&app, "/readyz", 100).await {
        assert_eq!(status, StatusCode::OK);
    }
    let checks = pings(&app, "memory").await - before;
    assert!(
        (1..=2).contains(&checks),
        "{checks} store checks for 100 probes within a second"
    );
}

/// A flood of scrapes renders the metrics once a second: every scrape in it gets the same text, where
/// rendering each would show the scrapes before it in `relay_http_requests_total`.
#[tokio::test]
async fn a_scrape_flood_renders_the_metrics_once_a_second() {
    let app = spawn_app().await;
    let _ = app.get("/metrics").await;
    let mut bodies = Vec::new();
    for (status, body) in flood(&app, "/metrics", 50).await {
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    let distinct: std::collections::BTreeSet<&String> = bodies.iter().collect();
    assert!(
        distinct.len() <= 2,
        "{} renders for 50 scrapes within a second",
        distinct.len()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !distinct.contains(&later),
        "a second later the scrape is rendered anew"
    );
}

/// `n` concurrent `GET path`s: their statuses and bodies.
async fn flood(app: &crate::helpers::TestApp, path: &str, n: usize) -> Vec<(StatusCode, String)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (app.client.clone(), app.url(path));
        set.spawn(async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        });
    }
    set.join_all().await
}

/// While the store fails, a flood of probes costs it one check a second, as when it is healthy.
#[tokio::test]
async fn probes_during_an_outage_share_a_check() {
    let (_dir, uri) = temp_sqlite();
    let app = spawn_with(|c| c.store = uri).await;
    app.store.close().await;
    let before = pings(&app, "sqlite").await;
    for (status, _) in flood(&app, "/readyz", 50).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let checks = pings(&app, "sqlite").await - before;
    assert!(
        checks <= 5,
        "{checks} store checks for 50 probes arriving together"
    );
}
