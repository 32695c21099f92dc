//! `/saved`: the shared saved string, its HTML page and its admin token.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_with, temp_sqlite};

const TOKEN: &str = "test-admin-token-0123456789";

async fn spawn_with_token() -> TestApp {
    spawn_with(|c| c.admin_token = Some(TOKEN.parse().unwrap())).await
}

async fn put_text(app: &TestApp, token: Option<&str>, text: &str) -> reqwest::Response {
    let mut request = app
        .client
        .put(app.url("/saved"))
        .header("content-type", "text/plain")
        .body(text.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn page(app: &TestApp) -> String {
    let response = app.get("/saved").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_default_saved_string_is_shown_in_a_heading() {
    let app = spawn_app().await;
    assert!(
        page(&app)
            .await
            .contains("<h1>The saved string is dynamic string</h1>")
    );
}

#[tokio::test]
async fn an_admin_changes_the_string_as_text_or_json() {
    let app = spawn_with_token().await;
    assert_eq!(
        put_text(&app, Some(TOKEN), "hello on-call").await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(
        page(&app)
            .await
            .contains("<h1>The saved string is hello on-call</h1>")
    );
    let json = app
        .client
        .put(app.url("/saved"))
        .bearer_auth(TOKEN)
        .json(&json!({"value": "from json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::NO_CONTENT);
    assert!(
        page(&app)
            .await
            .contains("<h1>The saved string is from json</h1>")
    );
}

#[tokio::test]
async fn the_saved_string_is_html_escaped() {
    let app = spawn_with_token().await;
    let attack = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"";
    assert_eq!(
        put_text(&app, Some(TOKEN), attack).await.status(),
        StatusCode::NO_CONTENT
    );
    let html = page(&app).await;
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &quot;"), "{html}");
}

#[tokio::test]
async fn writes_need_the_right_token() {
    let app = spawn_with_token().await;
    let missing = put_text(&app, None, "x").await;
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"relay\""
    );
    assert_problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(
        put_text(&app, Some("wrong-token-wrong-token"), "x").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(
        page(&app).await.contains("dynamic string"),
        "a refused write changes nothing"
    );
}

/// RFC 9110 section 11.1: the authentication scheme is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let app = spawn_with_token().await;
    for (n, scheme) in ["bearer", "BEARER", "BeArEr"].into_iter().enumerate() {
        let response = app
            .client
            .put(app.url("/saved"))
            .header("content-type", "text/plain")
            .header("authorization", format!("{scheme} {TOKEN}"))
            .body(format!("scheme {n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{scheme}");
        assert!(page(&app).await.contains(&format!("is scheme {n}</h1>")));
    }
    for header in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer".to_owned(),
    ] {
        let response = app
            .client
            .put(app.url("/saved"))
            .header("content-type", "text/plain")
            .header("authorization", header.clone())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test]
async fn without_a_configured_token_the_string_is_read_only() {
    let app = spawn_app().await;
    assert_problem(
        put_text(&app, Some(TOKEN), "x").await,
        StatusCode::FORBIDDEN,
        "writes-disabled",
    )
    .await;
    assert!(page(&app).await.contains("dynamic string"));
}

#[tokio::test]
async fn oversized_or_mistyped_values_are_refused() {
    let app = spawn_with_token().await;
    assert_problem(
        put_text(&app, Some(TOKEN), &"x".repeat(4097)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    )
    .await;
    let form = app
        .client
        .put(app.url("/saved"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("value=x")
        .send()
        .await
        .unwrap();
    assert_problem(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    )
    .await;
    let bad_json = app
        .client
        .put(app.url("/saved"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"val\": 1}")
        .send()
        .await
        .unwrap();
    assert_problem(bad_json, StatusCode::BAD_REQUEST, "invalid-body").await;
    let bad_utf8 = app
        .client
        .put(app.url("/saved"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_problem(bad_utf8, StatusCode::BAD_REQUEST, "invalid-body").await;
    assert!(page(&app).await.contains("dynamic string"));
}

#[tokio::test]
async fn the_string_lives_in_the_store_not_in_a_process() {
    // One relay per SQLite file (the second would be refused), so: set it, stop, start another.
    // Two relays at once share a DynamoDB table: dynamodb.rs.
    let (_dir, uri) = temp_sqlite();
    let token = || Some(TOKEN.parse().unwrap());
    let first = spawn_with(|c| {
        c.store = uri.clone();
        c.admin_token = token();
    })
    .await;
    assert_eq!(
        put_text(&first, Some(TOKEN), "shared by all")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    first.shutdown().await;
    let second = spawn_with(|c| {
        c.store = uri.clone();
        c.admin_token = token();
    })
    .await;
    assert!(
        page(&second)
            .await
            .contains("<h1>The saved string is shared by all</h1>")
    );
}

/// In AWS the token lives in Secrets Manager: the relay reads it at start from the secret's ARN
/// (`RELAY_ADMIN_TOKEN_SECRET`), here from the local AWS-API server's Secrets Manager.
#[tokio::test]
async fn the_admin_token_is_read_from_a_secrets_manager_secret_at_start() {
    let endpoint = crate::helpers::aws_endpoint();
    let shared = aws_config::from_env().endpoint_url(&endpoint).load().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&shared);
    let name = format!("relay/test/admin-token-{}", uuid::Uuid::new_v4().simple());
    let arn = secrets
        .create_secret()
        .name(&name)
        .secret_string(TOKEN)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let relay = crate::helpers::spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RELAY_ADMIN_TOKEN_SECRET", &arn),
        ("RUST_LOG", "info"),
    ])
    .await;
    let client = reqwest::Client::new();
    let put = |token: &'static str| {
        client
            .put(format!("{}/saved", relay.base))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("from the secret")
            .send()
    };
    assert_eq!(put(TOKEN).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        put("wrong-token-0123456789").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let logs = relay.stop();
    assert!(!logs.contains(TOKEN), "the token never reaches the logs");
}

#[test]
fn a_secret_that_cannot_be_read_stops_the_start_with_its_name() {
    let endpoint = crate::helpers::aws_endpoint();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_STORE", "memory:")
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_ADMIN_TOKEN_SECRET", "relay/test/no-such-secret")
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("cannot read the admin token secret relay/test/no-such-secret"),
        "{stdout}"
    );
}
