//! Problem documents: every error response leaves its route as an RFC 9457 problem document
//! (`application/problem+json`) with the request id ([`finish`], run by the response step). It also
//! records the problem's kind on the request span and emits a 500's reason there.
//!
//! Errors reach it two ways: as an `ApiError` (which left a [`PendingProblem`] in the response) or as a
//! bare status from a layer or the router (405, 413 from the body limit, 503 from the timeout), which
//! becomes a generic problem of that status. Must never: send a 500's reason to the client.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{InternalError, PendingProblem, UNAVAILABLE_RETRY_AFTER};
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

/// Turn an error response into a problem document with `request_id` (success responses pass untouched).
pub fn finish(request_id: Option<&HeaderValue>, response: Response) -> Response {
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
        request_id: request_id
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
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
