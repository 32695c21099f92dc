//! The served OpenAPI document is generated from the code; these tests check it describes what the
//! router actually serves, and that `relay openapi` prints the same document.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

const ROUTES: &[(&str, &[&str])] = &[
    ("/messages", &["get", "post"]),
    ("/messages/{id}", &["get", "put", "delete"]),
    ("/paste", &["post"]),
    ("/paste/{id}", &["get", "put", "delete"]),
    ("/app", &["get", "post"]),
    ("/saved", &["get", "put"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/", &["get"]),
];

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is documented"));
        for method in *methods {
            assert!(item.get(*method).is_some(), "{method} {path} is documented");
        }
    }
    assert_eq!(
        paths.len(),
        ROUTES.len(),
        "no undocumented or stale paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert!(spec["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    // The converse: each documented path+method reaches a handler (not the 404/405 fallback).
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = app.url(&path.replace("{id}", &id));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app
                .client
                .request(method.clone(), url)
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if status == StatusCode::NOT_FOUND {
                let body: Value = response.json().await.unwrap();
                assert_ne!(
                    body["type"], "urn:relayops:problem:route-not-found",
                    "{method} {path}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_documented_status_has_a_problem_body_or_is_a_success() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let code: u16 = status.parse().unwrap();
                if code >= 400 && path != "/readyz" {
                    let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

/// What the shared layers send is documented where it is sent: `x-request-id` on every response,
/// `Retry-After` on every 429 and 503, `WWW-Authenticate` on 401; only `PUT /saved` needs a token
/// (`security: []` at the root), and the document names its server.
#[tokio::test]
async fn the_headers_every_response_carries_are_documented() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(spec["security"], serde_json::json!([]));
    assert_eq!(spec["servers"][0]["url"], "/");
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op.get("security").is_some();
            assert_eq!(
                secured,
                (path.as_str(), method.as_str()) == ("/saved", "put"),
                "{method} {path}: security {:?}",
                op.get("security")
            );
            for (status, response) in op["responses"].as_object().unwrap() {
                let headers = &response["headers"];
                assert!(
                    headers["x-request-id"].is_object(),
                    "{method} {path} {status}"
                );
                if status == "429" || status == "503" {
                    assert!(
                        headers["Retry-After"].is_object(),
                        "{method} {path} {status}"
                    );
                }
                if status == "401" {
                    assert!(
                        headers["WWW-Authenticate"].is_object(),
                        "{method} {path} {status}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "only {checked} responses");
    let etag_on_304 =
        &spec["paths"]["/messages/{id}"]["get"]["responses"]["304"]["headers"]["ETag"];
    assert!(etag_on_304.is_object());
    for (path, method, status) in [("/messages", "post", "201"), ("/paste", "post", "200")] {
        let headers = &spec["paths"][path][method]["responses"][status]["headers"];
        assert!(
            headers["Idempotency-Replayed"].is_object(),
            "{method} {path}"
        );
        assert!(headers["ETag"].is_object(), "{method} {path}");
    }
}

#[test]
fn the_cli_prints_the_same_document() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let served: Value = runtime.block_on(async {
        let app = spawn_app().await;
        app.get("/openapi.json").await.json().await.unwrap()
    });
    assert_eq!(printed, served);
}
