//! `/paste`: the seed pastebin API, kept field for field (`content`, `timetolive`, `createdAt`) for
//! existing clients. A paste *is* a message: same store, same ids, same limits, same cache.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{AppJson, IdPath, IdempotencyKeyHeader};
use super::messages::parse_update;
use super::problem::Problem;
use super::{AppState, parse_ttl, rfc3339};
use crate::domain::Message;
use crate::service::CreateOutcome;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_paste))
        .routes(routes!(get_paste, update_paste, delete_paste))
}

/// A new paste, or the replacement of one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasteInput {
    #[schema(min_length = 1, example = "fn main() {}")]
    pub content: String,
    /// Seconds until the paste expires; without it the paste never expires.
    #[schema(minimum = 1, maximum = 31536000, example = 600)]
    #[serde(default, deserialize_with = "super::whole_seconds")]
    pub timetolive: Option<i64>,
}

/// A paste.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paste {
    #[schema(format = Uuid)]
    pub id: String,
    pub content: String,
    /// The time-to-live in seconds it was stored (or last updated) with; null when it never expires.
    pub timetolive: Option<i64>,
    #[serde(rename = "createdAt")]
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Message> for Paste {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.to_string(),
            content: m.body.as_str().to_owned(),
            timetolive: m.ttl_seconds(),
            created_at: rfc3339(m.created_at),
        }
    }
}

/// A paste answer: the paste, its `ETag` (the same tags as `/messages`, so `If-Match` on
/// `PUT /paste/{id}` can be used), and `Idempotency-Replayed: true` for a create answered from an
/// earlier request.
fn paste_response(message: &Message, replayed: bool) -> Response {
    let mut response = Json(Paste::from(message)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&message.revision.etag()) {
        headers.insert(header::ETAG, etag);
    }
    if replayed {
        headers.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Store a paste.
#[utoipa::path(post, path = "/paste", tag = "paste",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1-255 visible ASCII characters; makes retries safe", pattern = r"^[!-~]{1,255}$")),
    request_body = PasteInput,
    responses(
        (status = 200, description = "Stored", body = Paste, headers(("ETag" = String),
            ("Idempotency-Replayed" = String, description = "`true` when this answers a retry with the same Idempotency-Key: nothing new was stored"))),
        (status = 400, description = "Malformed JSON, missing or invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or content too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with a different request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_paste(
    State(state): State<AppState>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    AppJson(input): AppJson<PasteInput>,
) -> ApiResult<Response> {
    let body = state.parse_body(&input.content)?;
    let ttl = parse_ttl(input.timetolive)?;
    let outcome = state.messages.create(body, ttl, key).await?;
    let replayed = matches!(outcome, CreateOutcome::Replayed(_));
    Ok(paste_response(outcome.message(), replayed))
}

/// Read a paste.
#[utoipa::path(get, path = "/paste/{id}", tag = "paste",
    params(("id" = uuid::Uuid, Path, description = "The paste id (a UUID)")),
    responses(
        (status = 200, description = "The paste", body = Paste, headers(("ETag" = String))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such paste, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_paste(State(state): State<AppState>, IdPath(id): IdPath) -> ApiResult<Response> {
    let message = state.messages.get(id).await?;
    Ok(paste_response(&message, false))
}

/// Replace a paste's content and time-to-live (counted from now).
#[utoipa::path(put, path = "/paste/{id}", tag = "paste",
    params(("id" = uuid::Uuid, Path, description = "The paste id (a UUID)"),
           ("If-Match" = Option<String>, Header, nullable = false, description = "Apply only if the current ETag is one of these (or `*`); a malformed value is 400", pattern = r#"^[ \t]*\*[ \t]*$|^[ \t,]*(W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*$"#)),
    request_body = PasteInput,
    responses(
        (status = 200, description = "Updated", body = Paste, headers(("ETag" = String))),
        (status = 400, description = "Malformed id, header, JSON or field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such paste, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The ETag no longer matches", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or content too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_paste(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    headers: HeaderMap,
    AppJson(input): AppJson<PasteInput>,
) -> ApiResult<Response> {
    let update = parse_update(&state, id, &headers, input.content, input.timetolive)?;
    let message = state.messages.update(update).await?;
    Ok(paste_response(&message, false))
}

/// Delete a paste; answers with the paste as it was.
#[utoipa::path(delete, path = "/paste/{id}", tag = "paste",
    params(("id" = uuid::Uuid, Path, description = "The paste id (a UUID)")),
    responses(
        (status = 200, description = "Deleted; the paste as it was", body = Paste, headers(("ETag" = String, description = "The tag it had"))),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such paste, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_paste(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let message = state.messages.delete(id).await?;
    Ok(paste_response(&message, false))
}
