//! `/healthz` (the process is alive) and `/readyz` (it can serve: the store answers), plus `/metrics`.
//! Not rate limited, so probes and scrapers always get through; instead the store check and the metrics
//! text are made at most once a second (`ops_cache`) and shared by every caller in that second, so a
//! flood of probes or scrapes cannot load the store or slow the API.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::layers::REQUEST_ID;
use super::problem::{PROBLEM_JSON, Problem};
use crate::telemetry;

/// How long a readiness check waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentCheck {
    /// `up` or `down`.
    pub status: &'static str,
    pub backend: &'static str,
    pub latency_ms: f64,
    /// Why the component is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub store: ComponentCheck,
}

/// The store answers: 200.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    pub version: &'static str,
    pub checks: Checks,
}

/// A component is down: 503, a problem document with the checks as extension members.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
    pub version: &'static str,
    pub checks: Checks,
}

/// Readiness: the store answers a ping within 2 s. A check is shared by every probe for a second,
/// unless a store operation failed since.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready; `checks` says which component is down", body = NotReady, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (latency_ms, error) = state
        .ops
        .readiness
        .get(
            state.store.faults_seen(),
            |(_, error)| error.is_some(),
            async {
                let start = Instant::now();
                let outcome = tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await;
                let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                let error = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {} s", READY_TIMEOUT.as_secs())),
                };
                (latency_ms, error)
            },
        )
        .await;
    let ready = error.is_none();
    let checks = Checks {
        store: ComponentCheck {
            status: if ready { "up" } else { "down" },
            backend: state.store.backend().as_str(),
            latency_ms,
            error: error.clone(),
        },
    };
    let version = env!("CARGO_PKG_VERSION");
    if ready {
        let body = Ready {
            status: "ready",
            version,
            checks,
        };
        return (StatusCode::OK, Json(body)).into_response();
    }
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = NotReady {
        kind: "urn:relayops:problem:not-ready",
        title: "Service Unavailable",
        status: 503,
        detail: format!("the store is down: {}", error.unwrap_or_default()),
        request_id,
        version,
        checks,
    };
    // The request line's `problem` field, as `finish_problems` records it for every other error.
    telemetry::request::record_problem("not-ready");
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(5u32));
    response
}

/// Prometheus text exposition of every relay metric (404 in Lambda, where metrics go to CloudWatch as EMF),
/// rendered at most once a second.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 404, description = "Not served here: in Lambda, metrics are CloudWatch EMF log lines", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return ApiError::MetricsNotServed.into_response();
    };
    let text = state
        .ops
        .metrics
        .get(0, |_| true, async {
            axum::body::Bytes::from(handle.render())
        })
        .await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
