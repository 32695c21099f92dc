//! The response step: the last thing every response passes inside its route (an axum `map_response`
//! function). It writes every error as an RFC 9457 problem document (`application/problem+json`) with
//! the request id, records the problem's kind on the request span, emits a 500's reason, and tags the
//! response with the [`Endpoint`] it answered for, which the request line and metrics are labelled by.
//!
//! Errors reach it two ways: as an `ApiError` (which left a [`PendingProblem`] in the response) or as a
//! bare status from a layer or the router (405, 413 from the body limit, 503 from the timeout), which
//! becomes a generic problem of that status. Must never: send a 500's reason to the client.

use axum::Extension;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use tower_http::request_id::RequestId;
use utoipa::ToSchema;

use super::error::{InternalError, PendingProblem, UNAVAILABLE_RETRY_AFTER};
use crate::telemetry::endpoint::Endpoint;
use crate::telemetry::events::{Event, RequestFailedInternally};
use crate::telemetry::request::record_problem;

pub const PROBLEM_JSON: &str = "application/problem+json";

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

/// The response step (see the module docs).
pub async fn finish_response<B>(
    route: Option<MatchedPath>,
    method: Method,
    request_id: Option<Extension<RequestId>>,
    response: axum::http::Response<B>,
) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let request_id = request_id
        .as_ref()
        .and_then(|Extension(id)| id.header_value().to_str().ok())
        .unwrap_or_default();
    let mut response = to_problem(request_id, response.map(Body::new));
    response
        .extensions_mut()
        .insert(Endpoint::new(route, &method));
    response
}

/// Turn an error response into a problem document (success responses pass untouched).
fn to_problem(request_id: &str, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if let Some(InternalError(reason)) = parts.extensions.remove::<InternalError>() {
        // Inside the request's span: the reason lands next to the request id, never in the response.
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
    record_problem(code);
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
    use crate::http::error::ApiError;
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
            .layer(axum::middleware::map_response(finish_response))
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
            ));
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .header("x-request-id", "r-1")
                    .body(Body::empty())
                    .unwrap_or_default(),
            )
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response.extensions().get::<InternalError>().is_none(),
            "consumed by the response step"
        );
        assert!(response.extensions().get::<Endpoint>().is_some());
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
