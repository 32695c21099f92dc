//! `ApiError`: everything a request can fail with, its status and its problem code.
//!
//! `ApiError::into_response` has no side effects: it sets the status and headers and leaves a
//! [`PendingProblem`] (and for a 500 the reason, [`InternalError`]) in the response extensions. The
//! response step in [`super::problem`] then writes the `application/problem+json` body with the request
//! id, and emits the 500's reason inside the request's span.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::ServiceError;
use crate::store::StoreError;
use crate::telemetry::events::AuthFailure;

pub type ApiResult<T, E = ApiError> = Result<T, E>;

/// How long clients are told to wait when the store is unavailable or the request timed out.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a request can fail with. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the path does not hold a UUID.
    #[error("{0}")]
    MalformedId(String),
    /// 400: the body is not the JSON (or text) this route takes.
    #[error("{0}")]
    InvalidBody(String),
    /// 400: a query parameter is malformed.
    #[error("{0}")]
    InvalidQuery(String),
    /// 400: a request header is malformed.
    #[error("{0}")]
    InvalidHeader(String),
    /// 401: a write to the saved string without the right admin token.
    #[error("this write needs `Authorization: Bearer <admin token>`")]
    Unauthorized(AuthFailure),
    /// 403: writes to the saved string are disabled because no admin token is configured.
    #[error(
        "the saved string is read-only: start the relay with --admin-token (RELAY_ADMIN_TOKEN) to allow changes"
    )]
    WritesDisabled,
    /// 404: no such message, or it has expired.
    #[error("no message has this id (it may have expired or been deleted)")]
    MessageNotFound,
    /// 404: no such route.
    #[error("there is no route {0}; see /openapi.json")]
    RouteNotFound(String),
    /// 404: `/metrics` in Lambda, where metrics are exported as CloudWatch EMF instead.
    #[error(
        "metrics are not served here: in Lambda they are written as CloudWatch Embedded Metric Format lines"
    )]
    MetricsNotServed,
    /// 412: `If-Match` did not match the current ETag.
    #[error("the message has changed since the ETag given in If-Match; read it again and retry")]
    PreconditionFailed,
    /// 413: the body or the message is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body has a content type this route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the `Idempotency-Key` was used before with a different request.
    #[error(
        "this Idempotency-Key was used with a different request in the last 24 hours; use a new key"
    )]
    IdempotencyKeyReused,
    /// 429: the client sent more requests than its rate allows.
    #[error("too many requests from this client; retry after {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// 503: the store is busy or unreachable; retry later.
    #[error("the store is unavailable; retry after {} s", retry_after.as_secs())]
    Unavailable { retry_after: Duration },
    /// 500: a bug or a broken store. The detail shown to the client is generic.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::MessageNotFound,
            StoreError::PreconditionFailed => Self::PreconditionFailed,
            // A corrupt page is the store's failure, never the client's: 503, as for an outage.
            StoreError::Busy(_) | StoreError::Unavailable(_) | StoreError::Corrupt(_) => {
                Self::Unavailable {
                    retry_after: UNAVAILABLE_RETRY_AFTER,
                }
            }
            StoreError::Internal(detail) => Self::Internal(detail),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound => Self::MessageNotFound,
            ServiceError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            ServiceError::Store(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonDataError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("the request body is larger than the limit".into())
            }
            other => Self::InvalidBody(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidQuery(rejection.body_text())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedId(_)
            | Self::InvalidBody(_)
            | Self::InvalidQuery(_)
            | Self::InvalidHeader(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::WritesDisabled => StatusCode::FORBIDDEN,
            Self::MessageNotFound | Self::RouteNotFound(_) | Self::MetricsNotServed => {
                StatusCode::NOT_FOUND
            }
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, bounded problem code: the last segment of the problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedId(_) => "malformed-id",
            Self::InvalidBody(_) => "invalid-body",
            Self::InvalidQuery(_) => "invalid-query",
            Self::InvalidHeader(_) => "invalid-header",
            Self::Unauthorized(_) => "unauthorized",
            Self::WritesDisabled => "writes-disabled",
            Self::MessageNotFound => "message-not-found",
            Self::RouteNotFound(_) => "route-not-found",
            Self::MetricsNotServed => "metrics-not-served",
            Self::PreconditionFailed => "precondition-failed",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::RateLimited { .. } => "rate-limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// A problem waiting for its request id, carried in the response extensions.
#[derive(Debug, Clone)]
pub struct PendingProblem {
    pub code: &'static str,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            // Never hand internals to the client; the error event logs them.
            Self::Internal(_) => {
                "an unexpected error occurred; quote the request id to the operators".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = status.into_response();
        match &self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after } => {
                let seconds = retry_after.as_secs().max(1);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            Self::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"relay\""),
                );
            }
            _ => {}
        }
        if let Self::Internal(reason) = &self {
            response
                .extensions_mut()
                .insert(InternalError(reason.clone()));
        }
        response.extensions_mut().insert(PendingProblem {
            code: self.code(),
            detail,
        });
        response
    }
}

/// The reason behind a 500, for the error log line; never sent to the client.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);
