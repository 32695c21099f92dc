//! Cross-cutting steps written here (everything else is tower-http, applied in `startup`): the request
//! id's maker and hygiene for tower-http's request-id layers, and per-client rate limiting.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::error::ApiError;
use super::extract::ClientIp;
use crate::telemetry::events::{Event, RateLimited};
use crate::telemetry::handles::UNMATCHED_ROUTE;

/// The request id header, set on every request before anything else sees it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether an incoming request id is safe to adopt: 1-128 characters of `A-Za-z0-9._:-+/=` (the last
/// three because API Gateway's ids are base64).
/// Anything else (too long, spaces, control characters) is replaced, so ids are safe in logs and URLs.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'+' | b'/' | b'=')
        })
}

/// Drop a malformed incoming `x-request-id`, so tower-http's `SetRequestId` (which keeps any id it
/// finds) makes a new one.
pub fn drop_malformed_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|v| !is_valid_request_id(v.as_bytes()))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The id of a request that came without a usable one: in Lambda, API Gateway's request id (the id in
/// its access logs), else the Lambda invocation's; elsewhere a fresh UUID v7, which sorts by time.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, request: &axum::http::Request<B>) -> Option<RequestId> {
        let aws = aws_request_id(request)
            .filter(|id| is_valid_request_id(id.as_bytes()))
            .and_then(|id| HeaderValue::from_str(id).ok());
        let id = aws.unwrap_or_else(|| {
            // Millisecond time and random bits, without `now_v7`'s process-wide lock (message ids,
            // which must sort within a millisecond, keep it).
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
                .hyphenated()
                .encode_lower(&mut text);
            HeaderValue::from_bytes(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
        });
        Some(RequestId::new(id))
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

/// A keyed token bucket per client (governor, GCRA): per IPv4 address, per IPv6 /64 ([`ClientIp::key`]).
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    forwarded_hops: u8,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (rate limiting off).
    pub fn new(per_second: u32, burst: u32, forwarded_hops: u8) -> Option<Arc<Self>> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(quota),
            forwarded_hops,
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
    let client = ClientIp::of(&parts, limit.forwarded_hops);
    match limit.limiter.check_key(&client.key()) {
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
