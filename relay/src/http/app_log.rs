//! `/app`: an append-only log of timestamps. `POST /app` writes the current time; `GET /app` pages
//! through the log, newest first.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::truncate;
use super::problem::Problem;
use super::{AppState, rfc3339};
use crate::domain::{LogCursor, PageLimit, now};
use crate::telemetry::events::{AppTimestampAppended, Event};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(append_timestamp, list_timestamps))
}

/// Append the current time to the log.
#[utoipa::path(post, path = "/app", tag = "app",
    responses(
        (status = 201, description = "The timestamp just written (RFC 3339, UTC)", body = String, content_type = "text/plain"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn append_timestamp(State(state): State<AppState>) -> ApiResult<Response> {
    let at = now();
    state.store.append_timestamp(at).await?;
    AppTimestampAppended.emit();
    let mut response = (StatusCode::CREATED, rfc3339(at)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Timestamps per page, 1 to 1000 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^c[0-9]{1,19}$")]
    cursor: Option<String>,
}

/// One page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimestampPage {
    /// How many timestamps the log holds in all.
    pub count: u64,
    /// Newest first.
    pub timestamps: Vec<String>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List logged timestamps, newest first.
#[utoipa::path(get, path = "/app", tag = "app",
    params(LogQuery),
    responses(
        (status = 200, description = "A page of timestamps", body = TimestampPage),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_timestamps(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<TimestampPage>> {
    let Query(query) = query?;
    let limit = match query.limit.as_deref() {
        None => PageLimit::DEFAULT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(|n| PageLimit::parse(n).ok())
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!(
                    "limit `{}` must be a whole number from 1 to {}",
                    truncate(text, 32),
                    PageLimit::MAX
                ))
            })?,
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(|text| {
            text.parse::<LogCursor>().map_err(|e| {
                ApiError::InvalidQuery(format!("cursor `{}`: {e}", truncate(text, 32)))
            })
        })
        .transpose()?;
    let page = state.store.list_timestamps(limit, cursor).await?;
    Ok(Json(TimestampPage {
        count: page.total,
        timestamps: page.timestamps.into_iter().map(rfc3339).collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}
