//! `/messages`: every route, every documented status.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn create_returns_201_with_location_etag_and_the_resource() {
    let app = spawn_app().await;
    let response = app
        .post_message(json!({"message": "hello", "ttl_seconds": 60}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/messages/{id}"));
    assert_eq!(body["message"], "hello");
    let created =
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 60);
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn a_created_message_reads_back_by_id_with_its_etag() {
    let app = spawn_app().await;
    let created = app.create("read me ✓ <b>", None).await;
    let response = app
        .get(&format!("/messages/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, created);
    assert!(body.get("expires_at").is_none(), "no ttl, no expiry");
}

#[tokio::test]
async fn count_follows_creates_and_deletes() {
    let app = spawn_app().await;
    assert_eq!(app.count().await, 0);
    let a = app.create("a", None).await;
    app.create("b", None).await;
    app.create("c", Some(100)).await;
    assert_eq!(app.count().await, 3);
    let response = app
        .delete(&format!("/messages/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.count().await, 2);
}

#[tokio::test]
async fn unknown_id_is_404() {
    let app = spawn_app().await;
    let response = app
        .get(&format!("/messages/{}", uuid::Uuid::new_v4()))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "message-not-found").await;
}

#[tokio::test]
async fn malformed_ids_are_400_on_every_verb() {
    let app = spawn_app().await;
    for path in ["/messages/not-a-uuid", "/messages/123", "/paste/zzz"] {
        assert_problem(app.get(path).await, StatusCode::BAD_REQUEST, "malformed-id").await;
        assert_problem(
            app.delete(path).await,
            StatusCode::BAD_REQUEST,
            "malformed-id",
        )
        .await;
        let put = app
            .put_json(path, json!({"message": "x", "content": "x"}))
            .await;
        assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn expired_message_is_404_even_when_it_was_cached() {
    // The cache TTL (30 s by default) is far longer than the message's: the cache must not outlive it.
    let app = spawn_app().await;
    let created = app.create("brief", Some(1)).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::OK,
        "readable before expiry (and cached)"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_problem(
        app.get(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
    assert_problem(
        app.delete(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
}

#[tokio::test]
async fn update_replaces_text_and_ttl_and_changes_the_etag() {
    let app = spawn_app().await;
    let created = app.create("v1", Some(60)).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    let response = app.put_json(&path, json!({"message": "v2"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "v2");
    assert!(
        body.get("expires_at").is_none(),
        "a PUT without ttl_seconds clears the expiry"
    );
    assert_eq!(body["created_at"], created["created_at"]);
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        read, body,
        "the read after an update sees the update (cache included)"
    );
    assert_eq!(app.count().await, 1);
}

#[tokio::test]
async fn if_match_guards_updates() {
    let app = spawn_app().await;
    let created = app.create("v1", None).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    let put = |etag: &'static str, text: &'static str| {
        app.client
            .put(app.url(&path))
            .header("if-match", etag)
            .json(&json!({"message": text}))
            .send()
    };
    let stale = put("\"7\"", "nope").await.unwrap();
    assert_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
    )
    .await;
    let current = put("\"1\"", "v2").await.unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()["etag"], "\"2\"");
    let replayed = put("\"1\"", "v3").await.unwrap();
    assert_eq!(
        replayed.status(),
        StatusCode::PRECONDITION_FAILED,
        "a lost update is refused"
    );
    let star = put("*", "v3").await.unwrap();
    assert_eq!(star.status(), StatusCode::OK);
    let body: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(body["message"], "v3");
}

#[tokio::test]
async fn if_none_match_answers_304() {
    let app = spawn_app().await;
    let created = app.create("etag me", None).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    let response = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(response.headers().contains_key("x-request-id"));
    let other = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "\"9\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn updating_or_deleting_unknown_messages_is_404() {
    let app = spawn_app().await;
    let path = format!("/messages/{}", uuid::Uuid::now_v7());
    assert_problem(
        app.put_json(&path, json!({"message": "x"})).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
    assert_problem(
        app.delete(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
}

#[tokio::test]
async fn delete_is_final_and_counted_once() {
    let app = spawn_app().await;
    let created = app.create("bye", None).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::OK,
        "cached before the delete"
    );
    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::NOT_FOUND,
        "not served from the cache"
    );
    assert_eq!(app.count().await, 0);
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_first_result() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(app.url("/messages"))
            .header("idempotency-key", "order-7f3a")
            .json(&json!({"message": "pay once", "ttl_seconds": 300}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "same id, same timestamps");
    assert_eq!(app.count().await, 1, "no duplicate");
}

#[tokio::test]
async fn an_idempotency_key_reused_for_a_different_request_is_422() {
    let app = spawn_app().await;
    let send = |text: &'static str| {
        app.client
            .post(app.url("/messages"))
            .header("idempotency-key", "k-1")
            .json(&json!({ "message": text }))
            .send()
    };
    assert_eq!(send("first").await.unwrap().status(), StatusCode::CREATED);
    let reused = send("second").await.unwrap();
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(app.count().await, 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/messages"))
        .header("idempotency-key", "x".repeat(300))
        .json(&json!({"message": "m"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid-header").await;
    assert_eq!(app.count().await, 0);
}

#[tokio::test]
async fn invalid_bodies_are_400_and_store_nothing() {
    let app = spawn_app().await;
    let cases: &[&str] = &[
        "{",
        "[]",
        "null",
        "{}",
        r#"{"message": 5}"#,
        r#"{"message": ""}"#,
        r#"{"message": "x", "ttl_seconds": 0}"#,
        r#"{"message": "x", "ttl_seconds": -1}"#,
        r#"{"message": "x", "ttl_seconds": 31536001}"#,
        r#"{"message": "x", "ttl_seconds": 1.5}"#,
        r#"{"message": "x", "ttl_seconds": "60"}"#,
        r#"{"message": "x", "ttl_seconds": 99999999999999999999999}"#,
        r#"{"message": "x", "ttl": 60}"#,
    ];
    for body in cases {
        let response = app
            .client
            .post(app.url("/messages"))
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid-body").await;
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{body}: {problem}"
        );
    }
    let invalid_utf8 = app
        .client
        .post(app.url("/messages"))
        .header("content-type", "application/json")
        .body(b"{\"message\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_problem(invalid_utf8, StatusCode::BAD_REQUEST, "invalid-body").await;
    assert_eq!(app.count().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/messages"))
        .body("message=hi")
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
}

#[tokio::test]
async fn messages_over_the_limit_are_413() {
    let app = spawn_with(|c| c.max_message_bytes = 10).await;
    let fits = app.post_message(json!({"message": "0123456789"})).await;
    assert_eq!(fits.status(), StatusCode::CREATED);
    let over = app.post_message(json!({"message": "0123456789a"})).await;
    let problem = assert_problem(over, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("limit is 10 bytes"),
        "{problem}"
    );
    assert_eq!(app.count().await, 1);
}

#[tokio::test]
async fn the_default_limit_is_64_kib() {
    let app = spawn_app().await;
    let at_limit = app
        .post_message(json!({"message": "x".repeat(64 * 1024)}))
        .await;
    assert_eq!(at_limit.status(), StatusCode::CREATED);
    let over = app
        .post_message(json!({"message": "x".repeat(64 * 1024 + 1)}))
        .await;
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_ttl_written_as_a_whole_float_is_accepted() {
    // JSON Schema counts 60.0 as an integer; so does the relay.
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/messages"))
        .header("content-type", "application/json")
        .body(r#"{"message": "x", "ttl_seconds": 60.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 60);
}

#[tokio::test]
async fn a_malformed_if_match_is_400_not_a_silent_412() {
    let app = spawn_app().await;
    let created = app.create("v1", None).await;
    let path = format!("/messages/{}", created["id"].as_str().unwrap());
    for value in ["1", "null", "\"1\", 2"] {
        let response = app
            .client
            .put(app.url(&path))
            .header("if-match", value)
            .json(&json!({"message": "v2"}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid-header").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("double quotes"),
            "{problem}"
        );
    }
    let body: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(body["message"], "v1", "nothing changed");
}
