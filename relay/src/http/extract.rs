//! Extractors that reject with our problem format instead of axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::domain::{IdempotencyKey, MessageId};

/// `axum::Json`, rejecting with a problem (400 bad JSON or field, 413 too large, 415 not JSON).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

/// A message id from the path, 400 when it is not a UUID.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub MessageId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The raw (percent-decoded) parameter, borrowed: no `String` per request.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::MalformedId(rejection.body_text()))?;
        let raw = params.iter().next().map_or("", |(_, value)| value);
        raw.parse().map(IdPath).map_err(|e| {
            ApiError::MalformedId(format!("`{}` is not a message id: {e}", truncate(raw, 64)))
        })
    }
}

/// The optional `Idempotency-Key` header, 400 when present but malformed.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::InvalidHeader("Idempotency-Key must be visible ASCII".into()))?;
        IdempotencyKey::parse(text)
            .map(|key| Self(Some(key)))
            .map_err(|e| ApiError::InvalidHeader(e.to_string()))
    }
}

/// The `If-None-Match` header values, without copying the rest of the headers.
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(pub Vec<axum::http::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get_all(axum::http::header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

/// The client address used for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The peer address of the connection, or the first `X-Forwarded-For` entry when the relay is told to
    /// trust it. Requests with neither (in-process tests, some proxies) share one bucket.
    pub fn of(parts: &Parts, trust_forwarded_for: bool) -> Self {
        if trust_forwarded_for {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|first| first.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Self(ip);
            }
        }
        if let Some(ip) = lambda_source_ip(parts) {
            return Self(ip);
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self(addr.ip()))
            .unwrap_or(Self(IpAddr::from([0, 0, 0, 0])))
    }
}

/// In Lambda behind API Gateway: the caller's address as the gateway saw it.
fn lambda_source_ip(parts: &Parts) -> Option<IpAddr> {
    use lambda_http::request::RequestContext;
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

/// At most `max` characters of `text`, for echoing client input in a problem detail.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
