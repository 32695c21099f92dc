//! The HTTP API: one module per resource, each with `pub fn router() -> OpenApiRouter<AppState>`.
//! Handlers translate HTTP to calls on the message service or the store, and nothing more.

pub mod app_log;
pub mod assets;
pub mod error;
pub mod extract;
pub mod health;
pub mod layers;
pub mod messages;
pub mod openapi;
pub mod ops_cache;
pub mod paste;
pub mod problem;
pub mod response_step;
pub mod saved;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::AdminToken;
use crate::domain::{MessageBody, Ttl};
use crate::service::{Messages, SharedMessage};
use crate::store::DynStore;
use error::ApiError;

/// What every handler can reach: one shared `Context`, so extracting the state per request is one
/// reference-count increment.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Context>);

impl AppState {
    pub fn new(context: Context) -> Self {
        Self(std::sync::Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

/// A message revision as `/messages` sends it: the JSON body and the `ETag`, both shared, so a read of
/// a cached message copies and allocates neither. Made once per cached revision: the service keeps it
/// with the message (see [`SharedMessage`]).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: axum::body::Bytes,
    pub etag: axum::body::Bytes,
}

/// A message as the service shares it, with its HTTP representation.
pub type CachedMessage = SharedMessage<Rendered>;

/// The application's shared parts.
pub struct Context {
    pub messages: Messages<Rendered>,
    pub store: DynStore,
    pub max_message_bytes: usize,
    pub admin_token: Option<AdminToken>,
    /// The Prometheus handle; `None` in Lambda, where metrics are EMF.
    pub metrics: Option<PrometheusHandle>,
    /// The store check and metrics text, shared for a second (see `health`).
    pub ops: ops_cache::OpsCache,
}

impl Context {
    /// Parse a message text against the configured limit: 400 when empty, 413 when too large.
    pub fn parse_body(&self, text: &str) -> Result<MessageBody, ApiError> {
        MessageBody::parse(text, self.max_message_bytes).map_err(|e| match e {
            crate::domain::BodyError::Empty => ApiError::InvalidBody(e.to_string()),
            crate::domain::BodyError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        })
    }
}

/// Parse an optional time-to-live in seconds: 400 when out of range.
pub fn parse_ttl(seconds: Option<i64>) -> Result<Option<Ttl>, ApiError> {
    seconds
        .map(Ttl::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// RFC 3339 in UTC with microseconds, the one timestamp format of the API.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A time-to-live field: a whole number of seconds. JSON Schema counts `60.0` as an integer, so it is
/// accepted too; `1.5`, strings and numbers beyond any valid TTL are refused (400).
pub fn whole_seconds<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    if number.as_u64().is_some() {
        // Larger than any i64: certainly out of range, which the TTL check reports precisely.
        return Ok(Some(i64::MAX));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!(
            "a time-to-live is a whole number of seconds, got {number}"
        ))),
    }
}
