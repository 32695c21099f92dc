//! Errors as RFC 9457 problem details.
//!
//! `ApiError::into_response` has no side effects: it sets the status and headers and leaves a `Problem`
//! in the response extensions. The `finish_problems` middleware (outside every handler and layer) then
//! writes the `application/problem+json` body with the request id, and turns any bare error a layer
//! produced (405, 408, 413, timeouts) into a problem too, so every error has one shape.

use std::time::Duration;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::telemetry;
use crate::telemetry::events::{AuthFailure, Event, RequestFailedInternally};

pub type ApiResult<T, E = ApiError> = Result<T, E>;

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

/// How long clients are told to wait when the store is unavailable.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::MessageNotFound,
            StoreError::PreconditionFailed => Self::PreconditionFailed,
            StoreError::Busy(_) | StoreError::Unavailable(_) => Self::Unavailable {
                retry_after: UNAVAILABLE_RETRY_AFTER,
            },
            StoreError::Internal(detail) => Self::Internal(detail),
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

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:relayops:problem:message-not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, and what to do about it.
    pub detail: String,
    /// The request id (also in the `x-request-id` header): quote it when reporting a problem.
    pub request_id: String,
}

/// A problem waiting for its request id, carried in the response extensions.
#[derive(Debug, Clone)]
struct PendingProblem {
    code: &'static str,
    detail: String,
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

/// The request id header, set on every request before any handler runs. A `HeaderName`, not a `&str`:
/// inserting by a string name allocates the name on every call.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Write the body of every error response as problem+json with the request id. Everything inside this
/// layer may answer with a bare error status; everything outside sees problems only.
///
/// It also answers the two limits every request has, as problems:
/// - **Body size:** 413 at once to a request whose `Content-Length` is over `max_body_bytes`, without
///   calling the handler or reading the body. Bodies without a length (chunked) are limited while they
///   are read: this layer sets axum's `DefaultBodyLimit` on requests that have a body, and the
///   extractors enforce it. (tower-http's `RequestBodyLimit` wrapped the body of every request,
///   bodiless ones included, and its response body was boxed once more: two allocations on every
///   request; axum's `DefaultBodyLimit` layer inserted its limit into every request.)
/// - **Time:** 503 (with `Retry-After`) to a request not answered within `timeout`. The timer is armed
///   only when the request is not answered at its first poll, so a request answered at once (a cached
///   read) reads no clock and carries no timer in its future.
#[derive(Debug, Clone, Copy)]
pub struct ProblemLayer {
    max_body_bytes: u64,
    timeout: Duration,
}

impl ProblemLayer {
    pub fn new(max_body_bytes: u64, timeout: Duration) -> Self {
        Self {
            max_body_bytes,
            timeout,
        }
    }
}

impl<S> tower::Layer<S> for ProblemLayer {
    type Service = Problems<S>;

    fn layer(&self, inner: S) -> Problems<S> {
        Problems {
            inner,
            limits: *self,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Problems<S> {
    inner: S,
    limits: ProblemLayer,
}

impl<S, B, ResBody> tower::Service<axum::http::Request<B>> for Problems<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
    B: axum::body::HttpBody,
    ResBody: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ProblemsFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        // An unparsable length is hyper's to refuse (it answers 400 before any service runs).
        let declared_too_large = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > self.limits.max_body_bytes);
        // The limit the body extractors read, set only where there is a body to read (an extension
        // costs an allocation; most requests are bodiless GETs).
        if !request.body().is_end_stream() {
            DefaultBodyLimit::max(
                usize::try_from(self.limits.max_body_bytes).unwrap_or(usize::MAX),
            )
            .apply(&mut request);
        }
        ProblemsFuture {
            request_id: request.headers().get(REQUEST_ID).cloned(),
            inner: (!declared_too_large).then(|| self.inner.call(request)),
            timeout: self.limits.timeout,
            deadline: None,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ProblemsFuture<F> {
        // `None`: answered without calling the inner service (a declared body over the limit).
        #[pin]
        inner: Option<F>,
        request_id: Option<HeaderValue>,
        timeout: Duration,
        // Armed at the first poll that finds the request unanswered.
        deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F, ResBody, E> std::future::Future for ProblemsFuture<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<ResBody>, E>>,
    ResBody: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.as_pin_mut() {
            Some(inner) => match inner.poll(cx) {
                std::task::Poll::Ready(response) => response?.map(Body::new),
                std::task::Poll::Pending => {
                    let timeout = *this.timeout;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    std::task::ready!(deadline.as_mut().poll(cx));
                    // Too slow: answered now; the request's future is dropped with this one.
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            },
            None => ApiError::PayloadTooLarge("the request body is larger than the limit".into())
                .into_response(),
        };
        let request_id = this
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        std::task::Poll::Ready(Ok(finish_problem(request_id, response)))
    }
}

/// Turn an error response into a problem document (success responses pass untouched).
fn finish_problem(request_id: &str, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if let Some(InternalError(reason)) = parts.extensions.remove::<InternalError>() {
        // Inside the request's scope: the reason lands next to the request id, never in the response.
        RequestFailedInternally { reason: &reason }.emit();
    }
    let pending = parts.extensions.remove::<PendingProblem>();
    let already_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if pending.is_none() && already_problem {
        return Response::from_parts(parts, body);
    }
    let (code, detail) = match pending {
        Some(p) => (p.code, p.detail),
        None => generic_problem(status),
    };
    // The request line's `problem` field: on-call can group failures by kind without reading bodies.
    telemetry::request::record_problem(code);
    let problem = Problem {
        kind: format!("urn:relayops:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        request_id: request_id.to_owned(),
    };
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER)
    {
        let seconds = UNAVAILABLE_RETRY_AFTER.as_secs();
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Problems for errors produced by layers and the router rather than by our handlers.
fn generic_problem(status: StatusCode) -> (&'static str, String) {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this route does not take this method; see the Allow header and /openapi.json".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "the request body is larger than the limit".into(),
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
            "timeout",
            "the request took longer than the relay's request timeout".into(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported-media-type", "unsupported content type".into())
        }
        s if s.is_server_error() => ("internal", "an unexpected error occurred".into()),
        _ => ("bad-request", "the request could not be understood".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn an_internal_error_is_a_generic_problem_that_never_shows_its_reason() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async { ApiError::Internal("db file /secret/path corrupt".into()) }),
            )
            .layer(ProblemLayer::new(1024, Duration::from_secs(5)));
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .header(REQUEST_ID, "r-1")
                    .body(Body::empty())
                    .unwrap_or_default(),
            )
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response.extensions().get::<InternalError>().is_none(),
            "consumed by the problem writer"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("urn:relayops:problem:internal"), "{text}");
        assert!(text.contains("\"request_id\":\"r-1\""), "{text}");
        assert!(
            !text.contains("/secret/path"),
            "the reason stays in the logs: {text}"
        );
    }
}
