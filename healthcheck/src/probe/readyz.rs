//! The readiness probe: `GET /readyz` is 200 with `"status": "ready"`, and the store check (when the
//! relay reports one) is up. A 503 fails with the relay's own words for what is down.
//! It must never call `/healthz` instead: liveness says nothing about whether requests can be served.

use reqwest::StatusCode;
use serde::Deserialize;

use super::http::Session;
use crate::outcome::Failure;

#[derive(Debug, Deserialize)]
struct Ready {
    status: String,
    #[serde(default)]
    checks: Option<Checks>,
}

#[derive(Debug, Deserialize)]
struct Checks {
    #[serde(default)]
    store: Option<Component>,
}

#[derive(Debug, Deserialize)]
struct Component {
    status: String,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    latency_ms: Option<f64>,
}

pub async fn check(session: &mut Session<'_>) -> Result<String, Failure> {
    let response = session.get("/readyz").await?;
    response.expect_status(StatusCode::OK)?;
    response.expect_content_type(&["application/json"])?;
    let ready: Ready = response.json("the readiness document {\"status\": \"ready\", ...}")?;
    if ready.status != "ready" {
        return Err(response.mismatch(format!("status is {:?}, expected \"ready\"", ready.status)));
    }
    let Some(store) = ready.checks.and_then(|c| c.store) else {
        return Ok("ready".to_owned());
    };
    if store.status != "up" {
        return Err(response.mismatch(format!("ready, yet the store check is {:?}", store.status)));
    }
    let backend = store.backend.unwrap_or_else(|| "store".to_owned());
    Ok(match store.latency_ms {
        Some(ms) => format!("ready; {backend} up ({ms:.1} ms)"),
        None => format!("ready; {backend} up"),
    })
}
