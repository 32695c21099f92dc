//! `/paste`: the seed pastebin API, field for field, over the same store as `/messages`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app};

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn paste_round_trip_keeps_the_seed_field_names() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/paste"))
        .json(&json!({"content": "fn main() {}", "timetolive": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let paste: Value = response.json().await.unwrap();
    assert_eq!(keys(&paste), ["content", "createdAt", "id", "timetolive"]);
    assert_eq!(paste["content"], "fn main() {}");
    assert_eq!(paste["timetolive"], 600);
    assert!(chrono::DateTime::parse_from_rfc3339(paste["createdAt"].as_str().unwrap()).is_ok());
    let path = format!("/paste/{}", paste["id"].as_str().unwrap());

    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, paste);

    let updated = app
        .put_json(&path, json!({"content": "fn main() { run() }"}))
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["content"], "fn main() { run() }");
    assert_eq!(
        updated["timetolive"],
        Value::Null,
        "no timetolive, no expiry"
    );
    assert_eq!(updated["id"], paste["id"]);

    let deleted = app.delete(&path).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(deleted, updated, "DELETE answers with the paste as it was");
    assert_problem(
        app.get(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
}

#[tokio::test]
async fn a_paste_is_a_message() {
    let app = spawn_app().await;
    let paste: Value = app
        .client
        .post(app.url("/paste"))
        .json(&json!({"content": "shared"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paste["timetolive"], Value::Null);
    assert_eq!(app.count().await, 1);
    let message: Value = app
        .get(&format!("/messages/{}", paste["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(message["message"], "shared");
    assert_eq!(message["created_at"], paste["createdAt"]);
}

#[tokio::test]
async fn paste_input_errors_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"content": ""}),
        json!({"content": "x", "timetolive": 0}),
        json!({"message": "x"}),
    ] {
        let response = app
            .client
            .post(app.url("/paste"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid-body").await;
    }
    let missing = app.get(&format!("/paste/{}", uuid::Uuid::new_v4())).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "message-not-found").await;
    assert_eq!(app.count().await, 0);
}

/// Paste answers carry the message's `ETag`, so `If-Match` on `PUT /paste/{id}` is usable without a
/// detour through `/messages`; a retried create says it was replayed.
#[tokio::test]
async fn paste_answers_carry_the_etag_that_if_match_takes() {
    let app = spawn_app().await;
    let created = app
        .client
        .post(app.url("/paste"))
        .header("idempotency-key", "paste-etag-1")
        .json(&json!({"content": "v1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    assert!(created.headers().get("idempotency-replayed").is_none());
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let replay = app
        .client
        .post(app.url("/paste"))
        .header("idempotency-key", "paste-etag-1")
        .json(&json!({"content": "v1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(replay.headers()["etag"].to_str().unwrap(), etag);

    let read = app.get(&format!("/paste/{id}")).await;
    assert_eq!(read.headers()["etag"].to_str().unwrap(), etag);
    let update = |tag: String| {
        app.client
            .put(app.url(&format!("/paste/{id}")))
            .header("if-match", tag)
            .json(&json!({"content": "v2"}))
            .send()
    };
    let updated = update(etag.clone()).await.unwrap();
    assert_eq!(updated.status(), 200);
    let new_etag = updated.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert_eq!(
        update(etag).await.unwrap().status(),
        412,
        "the old tag is stale"
    );
    let deleted = app.delete(&format!("/paste/{id}")).await;
    assert_eq!(deleted.headers()["etag"].to_str().unwrap(), new_etag);
}
