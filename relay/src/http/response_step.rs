//! The response step: the last thing every response passes inside its route, and the one tower layer
//! written here (everything else is tower-http's or axum's). When a request arrives it notes the
//! request id, makes the request span ([`crate::telemetry::request::span`]) and finds the request
//! metrics of its route and method; it enters the span at every poll of the inner future, so the
//! handler's lines carry the request's fields; when the response is ready it turns an error into a
//! problem document ([`super::problem::finish`]), adds the security headers the handler did not set,
//! and emits `HttpResponseSent`, the line that closes the request and its metrics, inside the span.
//!
//! Why a layer of its own, and not tower-http's `TraceLayer`: the response event needs the route and
//! method (known when the request arrives) and the final status (known when the response is ready),
//! which `TraceLayer`'s callbacks do not share; and `TraceLayer` also wraps every response body to
//! enter the span again at each frame, where nothing logs. axum's `map_response` would box every
//! request's future to run extractors this step reads directly.
//! Must never: answer for the inner service, or emit the event outside the request span.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use tower_http::request_id::RequestId;

use super::error::ApiError;
use super::problem;
use crate::telemetry::events::{Event, HttpResponseSent};
use crate::telemetry::handles::{Endpoint, UNMATCHED_ROUTE};
use crate::telemetry::request;

/// Content-Security-Policy for everything served: the web app loads only its own files.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The security headers every response carries, unless a handler set its own.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
];

/// The response step as a layer. `observe`: make the request span and emit the response event (off
/// with `--no-telemetry`).
#[derive(Debug, Clone, Copy)]
pub struct ResponseStepLayer {
    pub observe: bool,
}

impl<S> tower::Layer<S> for ResponseStepLayer {
    type Service = ResponseStep<S>;

    fn layer(&self, inner: S) -> ResponseStep<S> {
        ResponseStep {
            inner,
            observe: self.observe,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResponseStep<S> {
    inner: S,
    observe: bool,
}

impl<S, B, ResBody> tower::Service<Request<B>> for ResponseStep<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = ResponseStepFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.header_value().clone());
        let observed = self.observe.then(|| {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or(UNMATCHED_ROUTE, |r| r.as_str());
            let id = request_id.as_ref().and_then(|id| id.to_str().ok());
            let trace = request::trace_of(request.headers());
            Observed {
                span: request::span(id.unwrap_or_default(), request.method(), route, &trace),
                endpoint: Endpoint::of(route, request.method()),
                start: Instant::now(),
            }
        });
        ResponseStepFuture {
            inner: self.inner.call(request),
            request_id,
            observed,
        }
    }
}

/// What an observed request carries from its arrival to its response.
#[derive(Debug)]
struct Observed {
    span: tracing::Span,
    endpoint: Endpoint,
    start: Instant,
}

pin_project_lite::pin_project! {
    /// The inner response future, then the problem document and the response event.
    pub struct ResponseStepFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        observed: Option<Observed>,
    }
}

impl<F, ResBody, E> Future for ResponseStepFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<axum::response::Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.observed.as_ref().map(|o| o.span.enter());
        let response = ready!(this.inner.poll(cx))?.map(Body::new);
        let mut response = problem::finish(this.request_id.as_ref(), response);
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.entry(name).or_insert(value);
        }
        if let Some(observed) = this.observed.as_ref() {
            let latency = observed.start.elapsed();
            request::finished(&observed.span, response.status());
            HttpResponseSent {
                span: &observed.span,
                endpoint: &observed.endpoint,
                status: response.status(),
                latency,
                flush_buffer: request::flush(response.status(), latency),
            }
            .emit();
        }
        Poll::Ready(Ok(response))
    }
}

/// The answer for a handler that panicked (tower-http's `CatchPanicLayer` calls it): an internal error,
/// whose reason (the panic's message) the response step logs and never sends.
pub fn panic_response(panic: Box<dyn Any + Send>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    ApiError::Internal(format!("the handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::InternalError;
    use axum::Router;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn an_internal_error_is_a_generic_problem_that_never_shows_its_reason() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async { ApiError::Internal("db file /secret/path corrupt".into()) }),
            )
            .layer(ResponseStepLayer { observe: true })
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

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_an_internal_problem_and_the_reason_kept() {
        let app = Router::new()
            .route(
                "/panic",
                get(|| async {
                    let empty: Vec<u8> = Vec::new();
                    empty[usize::from(empty.is_empty())].to_string()
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_response as fn(Box<dyn Any + Send>) -> axum::response::Response,
            ));
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/panic")
                    .body(Body::empty())
                    .unwrap_or_default(),
            )
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let reason = response
            .extensions()
            .get::<InternalError>()
            .map(|e| e.0.clone());
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.starts_with("the handler panicked: index out of bounds")),
            "{reason:?}"
        );
    }
}
