//! `/messages`: create, read, count, update and delete messages.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{AppJson, IdPath, IdempotencyKeyHeader, IfNoneMatch};
use super::problem::Problem;
use super::{AppState, CachedMessage, Rendered, parse_ttl, rfc3339};
use crate::domain::{MAX_TTL_SECONDS, Message, MessageUpdate, Precondition, entity_tags};
use crate::service::CreateOutcome;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_message, count_messages))
        .routes(routes!(get_message, update_message, delete_message))
}

/// A new message, or the replacement of one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// The text, 1 byte up to the configured limit (64 KiB by default).
    #[schema(min_length = 1, example = "hello, relay")]
    pub message: String,
    /// Seconds until the message expires; without it the message never expires.
    #[schema(minimum = 1, maximum = 31536000, example = 3600)]
    #[serde(default, deserialize_with = "super::whole_seconds")]
    pub ttl_seconds: Option<i64>,
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResource {
    #[schema(format = Uuid, example = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")]
    pub id: String,
    pub message: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Present when the message has a time-to-live.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl From<&Message> for MessageResource {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            message: m.body.as_str().to_owned(),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            expires_at: m.expires_at.map(rfc3339),
        }
    }
}

/// The number of stored messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageCount {
    /// Exact for creates and deletes (each is counted once); may include messages that expired within
    /// the last sweep interval. On DynamoDB it is read eventually consistent, so the creates and
    /// deletes of the last moment (usually well under a second) may not be in it yet.
    pub count: u64,
}

/// A message revision as sent: its JSON and its `ETag`, rendered once per revision.
fn rendered(message: &CachedMessage) -> &Rendered {
    message.representation(|m| Rendered {
        json: serde_json::to_vec(&MessageResource::from(m))
            .unwrap_or_default()
            .into(),
        etag: m.revision.etag().into(),
    })
}

/// The `ETag` header of a rendered revision (a quoted number: always a valid header value).
fn etag_header(rendered: &Rendered) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(rendered.etag.clone()).ok()
}

/// The message resource as JSON with its `ETag`.
fn with_etag(status: StatusCode, message: &CachedMessage) -> Response {
    let rendered = rendered(message);
    let mut response = Response::new(axum::body::Body::from(rendered.json.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Room for what the layers add on the way out (length, request id, security headers), so the map
    // is allocated once instead of growing.
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = etag_header(rendered) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// How many headers a message response ends up with, about.
const RESPONSE_HEADERS: usize = 12;

/// Store a message.
///
/// With an `Idempotency-Key` header, a retry within 24 hours returns the first result (with
/// `Idempotency-Replayed: true`) instead of storing a duplicate.
#[utoipa::path(post, path = "/messages", tag = "messages",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1-255 visible ASCII characters; makes retries safe", pattern = r"^[!-~]{1,255}$")),
    request_body = MessageInput,
    responses(
        (status = 201, description = "Stored", body = MessageResource,
            headers(("Location" = String, description = "/messages/{id}"), ("ETag" = String),
                ("Idempotency-Replayed" = String, description = "`true` when this answers a retry with the same Idempotency-Key: nothing new was stored"))),
        (status = 400, description = "Malformed JSON, missing or invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or message too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_message(
    State(state): State<AppState>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    AppJson(input): AppJson<MessageInput>,
) -> ApiResult<Response> {
    let body = state.parse_body(&input.message)?;
    let ttl = parse_ttl(input.ttl_seconds)?;
    let outcome = state.messages.create(body, ttl, key).await?;
    let message = outcome.message();
    let mut response = with_etag(StatusCode::CREATED, message);
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/messages/{}", message.id)) {
        headers.insert(header::LOCATION, location);
    }
    if matches!(outcome, CreateOutcome::Replayed(_)) {
        headers.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Count stored messages (O(1)).
#[utoipa::path(get, path = "/messages", tag = "messages",
    responses(
        (status = 200, description = "The count", body = MessageCount),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn count_messages(State(state): State<AppState>) -> ApiResult<Json<MessageCount>> {
    let count = state.messages.count().await?;
    Ok(Json(MessageCount { count }))
}

/// Read a message by id.
///
/// Answers 304 when `If-None-Match` holds the current ETag. Expired messages are 404 even before they
/// are removed.
#[utoipa::path(get, path = "/messages/{id}", tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The message id (a UUID)"),
           ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag from an earlier read")),
    responses(
        (status = 200, description = "The message", body = MessageResource, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the given ETag", headers(("ETag" = String))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_message(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> ApiResult<Response> {
    let message = state.messages.get(id).await?;
    let rendered = rendered(&message);
    let etag = std::str::from_utf8(&rendered.etag).unwrap_or_default();
    // Weak comparison (RFC 9110 §13.1.2): `W/"3"` matches `"3"`. A malformed value matches nothing.
    let current = etag.trim_matches('"');
    let unchanged = if_none_match
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value.trim_matches([' ', '\t']) == "*"
                || entity_tags(value)
                    .is_some_and(|tags| tags.iter().any(|tag| tag.opaque == current))
        });
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Some(value) = etag_header(rendered) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    Ok(with_etag(StatusCode::OK, &message))
}

/// Replace a message's text and time-to-live.
///
/// Without `ttl_seconds` the message no longer expires; with it, the time-to-live counts from now.
/// With `If-Match`, the update applies only if the message still has that ETag (else 412).
#[utoipa::path(put, path = "/messages/{id}", tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The message id (a UUID)"),
           ("If-Match" = Option<String>, Header, nullable = false, description = "Apply only if the current ETag is one of these (or `*`); a malformed value is 400", pattern = r#"^[ \t]*\*[ \t]*$|^[ \t,]*(W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*$"#)),
    request_body = MessageInput,
    responses(
        (status = 200, description = "Updated", body = MessageResource, headers(("ETag" = String))),
        (status = 400, description = "Malformed id, header, JSON or field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The ETag no longer matches", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or message too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_message(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    headers: HeaderMap,
    AppJson(input): AppJson<MessageInput>,
) -> ApiResult<Response> {
    let update = parse_update(&state, id, &headers, input.message, input.ttl_seconds)?;
    let message = state.messages.update(update).await?;
    Ok(with_etag(StatusCode::OK, &message))
}

/// Build an update from its HTTP parts (shared with `/paste`).
pub fn parse_update(
    state: &AppState,
    id: crate::domain::MessageId,
    headers: &HeaderMap,
    text: String,
    ttl_seconds: Option<i64>,
) -> ApiResult<MessageUpdate> {
    let if_match = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::InvalidHeader("If-Match must be visible ASCII".into()))?,
        ),
    };
    Ok(MessageUpdate {
        id,
        body: state.parse_body(&text)?,
        ttl: parse_ttl(ttl_seconds)?,
        precondition: Precondition::from_if_match(if_match)
            .map_err(|e| ApiError::InvalidHeader(e.to_string()))?,
    })
}

/// Delete a message.
#[utoipa::path(delete, path = "/messages/{id}", tag = "messages",
    params(("id" = uuid::Uuid, Path, description = "The message id (a UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_message(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    state.messages.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

const _: () = assert!(
    MAX_TTL_SECONDS == 31_536_000,
    "keep the schema's maximum in step"
);
