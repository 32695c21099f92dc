//! Cross-cutting middleware written here (the rest is tower-http, applied in `startup`):
//! request id hygiene, the request's log fields + response event, and per-client rate limiting.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::{ApiError, REQUEST_ID};
use super::extract::ClientIp;
use crate::telemetry;
use crate::telemetry::events::{
    ColdStart, Event, HttpResponseSent, RateLimited, RouteLabel, UNMATCHED_ROUTE, method_label,
};
use crate::telemetry::request::{self, RequestFields};

/// Whether an incoming request id is safe to adopt: 1-128 characters of `A-Za-z0-9._:-+/=` (the last
/// three because API Gateway's ids are base64).
/// Anything else (too long, spaces, control characters) is replaced, so ids are safe in logs and URLs.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'+' | b'/' | b'=')
        })
}

/// Every request gets an `x-request-id` (the incoming one when well-formed, else a new one) before
/// anything else runs, and every response carries it back. One hand-written layer rather than
/// tower-http's set + propagate pair: those format the id into a `String`, copy it again into the header,
/// and store it in the request's and the response's extensions, six allocations per request that nothing
/// here reads (the log fields, the problem writer and the handlers read the header).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<axum::http::Request<B>> for RequestIds<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        let incoming = request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| is_valid_request_id(v.as_bytes()))
            .cloned();
        let id = incoming.unwrap_or_else(|| {
            let id = new_request_id(&request);
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        });
        RequestIdFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

/// A request id for a request that came without a usable one: in Lambda, API Gateway's request id (the
/// id in its access logs), else the Lambda invocation's; elsewhere a fresh UUID v7, which sorts by time.
fn new_request_id<B>(request: &axum::http::Request<B>) -> HeaderValue {
    let aws = aws_request_id(request)
        .filter(|id| is_valid_request_id(id.as_bytes()))
        .and_then(|id| HeaderValue::from_str(id).ok());
    if let Some(value) = aws {
        return value;
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // Millisecond time and random bits, without `now_v7`'s process-wide counter: that one takes a
    // global lock on every call to keep ids strictly ordered within a millisecond, which request ids
    // do not need (message ids do, and keep it).
    uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
        .hyphenated()
        .encode_lower(&mut text);
    // One allocation, shared by the request's header, the response's and the log lines.
    HeaderValue::from_maybe_shared(axum::body::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

pin_project_lite::pin_project! {
    /// The inner response future; the response gets the request's id unless it already has one.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> std::future::Future for RequestIdFuture<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().entry(REQUEST_ID).or_insert(id);
        }
        std::task::Poll::Ready(result)
    }
}

fn aws_request_id<B>(request: &axum::http::Request<B>) -> Option<&str> {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let from_gateway = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.as_deref(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.as_deref(),
        _ => None,
    };
    from_gateway.or_else(|| {
        request
            .lambda_context_ref()
            .map(|ctx| ctx.request_id.as_str())
    })
}

/// The request's log fields (request_id, method, route) around everything inside, and
/// `HttpResponseSent` when the response is ready. `route` is the matched template, never the raw path.
/// The fields travel in a tracing span or in the per-thread request slot (`telemetry::request`); a
/// hand-written tower layer rather than `from_fn`, so the slot way allocates nothing per request.
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    spans: bool,
}

impl ObserveLayer {
    /// `spans`: carry the fields in a tracing span (see `telemetry::request_spans`).
    pub fn new(spans: bool) -> Self {
        Self { spans }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            spans: self.spans,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    spans: bool,
}

impl<S, B, ResBody> tower::Service<axum::http::Request<B>> for Observe<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(request.method());
        let route = RouteLabel::of(
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or(UNMATCHED_ROUTE, |r| r.as_str()),
        );
        let cold_start = telemetry::cold_start();
        let fields = RequestFields::new(
            request.headers().get(REQUEST_ID).cloned(),
            method,
            route.as_str(),
            cold_start,
        );
        // A span the filter turns off would carry nothing: the slot way then.
        let scope = match self.spans.then(|| fields.span()) {
            Some(span) if !span.is_disabled() => Scope::Span(span),
            _ => Scope::Slot(Some(fields)),
        };
        let mut observed = Observed {
            start,
            method,
            route,
            scope,
        };
        if cold_start == Some(true) {
            observed.in_scope(|| ColdStart.emit());
        }
        // Not in scope around `call`: nothing inside logs before its future is polled (handlers and
        // middleware run in their futures).
        let inner = self.inner.call(request);
        ObserveFuture { inner, observed }
    }
}

/// What `Observe` remembers about a request until its response is ready.
#[derive(Debug)]
pub struct Observed {
    start: Instant,
    method: &'static str,
    route: RouteLabel,
    scope: Scope,
}

/// How a request's fields reach its log lines (see `telemetry::request`).
#[derive(Debug)]
enum Scope {
    /// The request span, entered while the request is polled.
    Span(tracing::Span),
    /// The fields, moved into this thread's slot while the request is polled.
    Slot(Option<RequestFields>),
}

impl Observed {
    /// Run `f` with this request's fields on every line it logs.
    fn in_scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        match &mut self.scope {
            Scope::Span(span) => span.in_scope(f),
            Scope::Slot(fields) => request::in_scope(fields, f),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, polled with the request's fields in scope.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        observed: Observed,
    }
}

impl<F, ResBody, E> std::future::Future for ObserveFuture<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let observed = this.observed;
        let (start, method, route) = (observed.start, observed.method, observed.route);
        observed.in_scope(|| {
            let result = std::task::ready!(inner.poll(cx));
            if let Ok(response) = &result {
                HttpResponseSent {
                    route,
                    method,
                    status: response.status(),
                    latency: start.elapsed(),
                }
                .emit();
            }
            std::task::Poll::Ready(result)
        })
    }
}

/// Response compression (tower-http's), engaged only for requests that accept a compressed encoding.
/// tower-http wraps every response body in its ~6 KB compression body, even one it will not compress;
/// moving that through the layers cost more than the rest of a small GET, so requests that do not ask
/// for compression bypass it, and compressed bodies are boxed once, here.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressLayer;

impl<S: Clone> tower::Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Compress<S> {
        Compress { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Compress<S> {
    inner: S,
}

/// Whether the client takes an encoding the compression layer can produce.
fn accepts_compression<B>(request: &axum::http::Request<B>) -> bool {
    request
        .headers()
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("gzip") || v.contains("br"))
}

impl<S, ReqBody> tower::Service<axum::http::Request<ReqBody>> for Compress<S>
where
    S: tower::Service<axum::http::Request<ReqBody>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        CompressFuture<
            S::Future,
            <tower_http::compression::Compression<S> as tower::Service<
                axum::http::Request<ReqBody>,
            >>::Future,
        >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<ReqBody>) -> Self::Future {
        if accepts_compression(&request) {
            // The compression service takes the inner service that was polled ready.
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            CompressFuture::Compressed {
                inner: tower::Layer::layer(
                    &tower_http::compression::CompressionLayer::new(),
                    ready,
                )
                .call(request),
            }
        } else {
            CompressFuture::Plain {
                inner: self.inner.call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CompressProj]
    pub enum CompressFuture<P, C> {
        Plain { #[pin] inner: P },
        Compressed { #[pin] inner: C },
    }
}

impl<P, C, CBody, E> std::future::Future for CompressFuture<P, C>
where
    P: std::future::Future<Output = Result<Response, E>>,
    C: std::future::Future<Output = Result<axum::http::Response<CBody>, E>>,
    CBody: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    CBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let response = match self.project() {
            CompressProj::Plain { inner } => std::task::ready!(inner.poll(cx))?,
            CompressProj::Compressed { inner } => {
                std::task::ready!(inner.poll(cx))?.map(axum::body::Body::new)
            }
        };
        std::task::Poll::Ready(Ok(response))
    }
}

/// A keyed token bucket per client IP (governor, GCRA).
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trust_forwarded_for: bool,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (rate limiting off).
    pub fn new(per_second: u32, burst: u32, trust_forwarded_for: bool) -> Option<Arc<Self>> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(quota),
            trust_forwarded_for,
        }))
    }

    /// Forget clients whose buckets are full again, so memory stays bounded by recent clients.
    pub fn forget_idle_clients(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

pub async fn rate_limit(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let ClientIp(ip) = ClientIp::of(&parts, limit.trust_forwarded_for);
    match limit.limiter.check_key(&ip) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Round up: a client that waits the advertised time must be let through.
            let retry_after =
                Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
            let route = parts
                .extensions
                .get::<MatchedPath>()
                .map_or(UNMATCHED_ROUTE, |p| p.as_str());
            RateLimited { route, retry_after }.emit();
            ApiError::RateLimited { retry_after }.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_adopted_only_when_well_formed() {
        assert!(is_valid_request_id(b"abc-123_x.y:z"));
        assert!(is_valid_request_id(b"1-67891234-abcdef012345678912345678"));
        assert!(is_valid_request_id(b"JKJaXmPLvHcESHA="));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"line\nbreak"));
        assert!(!is_valid_request_id("x".repeat(129).as_bytes()));
    }
}
