//! `/app`: the timestamp log.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn post_app_writes_and_returns_the_current_time() {
    let app = spawn_app().await;
    let before = chrono::Utc::now();
    let response = app.client.post(app.url("/app")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with('Z'), "UTC: {text}");
    let at = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
    let after = chrono::Utc::now();
    assert!(
        at >= before - chrono::TimeDelta::milliseconds(1) && at <= after,
        "{text}"
    );
    let page: Value = app.get("/app").await.json().await.unwrap();
    assert_eq!(page["count"], 1);
    assert_eq!(page["timestamps"][0], text);
}

#[tokio::test]
async fn get_app_pages_newest_first() {
    let app = spawn_app().await;
    let mut written = Vec::new();
    for _ in 0..5 {
        written.push(
            app.client
                .post(app.url("/app"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    written.reverse();
    let first: Value = app.get("/app?limit=2").await.json().await.unwrap();
    assert_eq!(first["count"], 5);
    let mut seen: Vec<String> = serde_json::from_value(first["timestamps"].clone()).unwrap();
    let mut cursor = first["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page: Value = app
            .get(&format!("/app?limit=2&cursor={c}"))
            .await
            .json()
            .await
            .unwrap();
        let more: Vec<String> = serde_json::from_value(page["timestamps"].clone()).unwrap();
        seen.extend(more);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, written);
    let all: Value = app.get("/app").await.json().await.unwrap();
    assert!(
        all.get("next_cursor").is_none(),
        "one page holds all five: {all}"
    );
}

#[tokio::test]
async fn bad_limits_and_cursors_are_400() {
    let app = spawn_app().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "cursor=xyz",
        "cursor=c-5",
        "limit=2&limit=3",
    ] {
        let response = app.get(&format!("/app?{query}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid-query").await;
    }
    assert_eq!(app.get("/app?limit=1000").await.status(), StatusCode::OK);
}
