//! Test fixtures: a real relay started in this process on 127.0.0.1:0 (the relay's own `TestApp`, from
//! its `test-support` feature), a small fake relay (axum on 127.0.0.1:0) for the failures a real one will not produce on
//! demand, and the local AWS-API server's endpoint. Nothing here binds anything but 127.0.0.1, and a
//! missing AWS-API server is a test failure, never a skip.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use healthcheck::Settings;
use serde_json::json;
use tokio::net::TcpListener;

/// A relay serving on loopback in this process: the relay's own test support.
pub use relay::test_support::{
    TestApp as TestRelay, aws_endpoint, spawn_app as spawn_relay, spawn_with as spawn_relay_with,
    temp_sqlite,
};

/// Canary settings aimed at a test relay, every default kept.
pub trait CanaryTarget {
    fn settings(&self) -> Settings;
}

impl CanaryTarget for TestRelay {
    fn settings(&self) -> Settings {
        settings_for(self.addr)
    }
}

pub fn settings_for(addr: SocketAddr) -> Settings {
    Settings::new(format!("http://{addr}").parse().expect("target"))
}

/// A unique stage name, so runs of different tests never read each other's metrics.
pub fn unique_stage(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ---- a fake relay ---------------------------------------------------------------------------------

/// What the fake relay saw: every request's method, path and `x-request-id`.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<SeenRequest>>>);

/// Method, path and query, and the `x-request-id` and `traceparent` headers if any.
pub type SeenRequest = (String, String, Option<String>, Option<String>);

impl Seen {
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.0.lock().expect("lock").clone()
    }
}

const FAKE_ID: &str = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
const PAGE: &str = "<!doctype html><html><head>\
    <link rel=\"stylesheet\" href=\"/assets/app.css\">\
    <script type=\"module\" src=\"/assets/app.js\"></script></head><body>relayops</body></html>";

pub fn typed(content_type: &'static str, body: impl Into<String>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({"type": "urn:relayops:problem:internal", "title": "Internal Server Error",
                      "status": status.as_u16(), "detail": detail, "request_id": "fake"});
    (status, typed("application/problem+json", body.to_string())).into_response()
}

/// The routes of a well-behaved fake relay: every probe passes against them. The echoed message is
/// whatever the probe posted, so the round trip compares equal.
fn healthy_routes() -> Vec<(&'static str, MethodRouter)> {
    let posted: Arc<Mutex<String>> = Arc::default();
    let on_post = posted.clone();
    let on_get = posted;
    vec![
        (
            "/",
            get(|| async { typed("text/html; charset=utf-8", PAGE) }),
        ),
        (
            "/assets/app.js",
            get(|| async { typed("text/javascript; charset=utf-8", "export {};") }),
        ),
        (
            "/assets/app.css",
            get(|| async { typed("text/css; charset=utf-8", "body{}") }),
        ),
        (
            "/readyz",
            get(|| async {
                typed(
                    "application/json",
                    r#"{"status":"ready","checks":{"store":{"status":"up","backend":"fake","latency_ms":0.1}}}"#,
                )
            }),
        ),
        (
            "/saved",
            get(|| async {
                typed(
                    "text/html; charset=utf-8",
                    "<html><h1>The saved string is dynamic string</h1></html>",
                )
            }),
        ),
        (
            "/app",
            get(|| async {
                typed(
                    "application/json",
                    r#"{"count":1,"timestamps":["2026-11-25T09:48:08.149939Z"]}"#,
                )
            }),
        ),
        (
            "/messages",
            post(move |body: axum::Json<serde_json::Value>| {
                let posted = on_post.clone();
                async move {
                    let text = body["message"].as_str().unwrap_or_default().to_owned();
                    *posted.lock().expect("lock") = text.clone();
                    let resource = json!({"id": FAKE_ID, "message": text, "created_at": "x",
                                          "updated_at": "x", "expires_at": "y"});
                    (
                        StatusCode::CREATED,
                        [(header::LOCATION, format!("/messages/{FAKE_ID}"))],
                        axum::Json(resource),
                    )
                        .into_response()
                }
            })
            .get(|| async { typed("application/json", r#"{"count":3}"#) }),
        ),
        (
            "/messages/{id}",
            get(move || {
                let posted = on_get.clone();
                async move {
                    let text = posted.lock().expect("lock").clone();
                    axum::Json(json!({"id": FAKE_ID, "message": text, "created_at": "x",
                                      "updated_at": "x", "expires_at": "y"}))
                    .into_response()
                }
            })
            .delete(|| async { StatusCode::NO_CONTENT }),
        ),
    ]
}

/// Serve a fake relay: the healthy routes, with `overrides` replacing the routes of the same path.
/// Returns its address and what it saw. It echoes `x-request-id` like the relay does.
pub async fn spawn_fake(overrides: Vec<(&'static str, MethodRouter)>) -> (SocketAddr, Seen) {
    let mut router = Router::new();
    let mut routes = healthy_routes();
    routes.retain(|(path, _)| !overrides.iter().any(|(p, _)| p == path));
    routes.extend(overrides);
    for (path, route) in routes {
        router = router.route(path, route);
    }
    let seen = Seen::default();
    let record = seen.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let record = record.clone();
            async move {
                let headers = request.headers();
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (id, traceparent) = (header("x-request-id"), header("traceparent"));
                record.0.lock().expect("lock").push((
                    request.method().to_string(),
                    request.uri().to_string(),
                    id.clone(),
                    traceparent,
                ));
                let mut response = next.run(request).await;
                if let Some(id) = id.and_then(|id| id.parse().ok()) {
                    response.headers_mut().insert("x-request-id", id);
                }
                response
            }
        },
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, seen)
}

/// A handler that answers like `healthy` after `delay`.
pub fn slow(delay: Duration, content_type: &'static str, body: &'static str) -> MethodRouter {
    get(move || async move {
        tokio::time::sleep(delay).await;
        typed(content_type, body)
    })
}

// ---- the local AWS-API server --------------------------------------------------------------------
