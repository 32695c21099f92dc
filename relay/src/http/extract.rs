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
    /// The client's address: with `hops` trusted proxies in front, the `X-Forwarded-For` entry the
    /// outermost of them added (the `hops`-th from the right, every header line read as one list; the
    /// leftmost when there are fewer entries); else API Gateway's source IP (Lambda) or the connection's
    /// peer. Requests with none of these (in-process tests) share one bucket.
    pub fn of(parts: &Parts, hops: u8) -> Self {
        if hops > 0 {
            // From the right, without collecting: the `hops`-th entry, or the last seen (leftmost).
            let from_right = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .rev()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.rsplit(','))
                .map(str::trim)
                .filter(|entry| !entry.is_empty());
            let trusted = from_right.take(usize::from(hops)).last();
            if let Some(ip) = trusted.and_then(|entry| entry.parse::<IpAddr>().ok()) {
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

    /// The rate-limit key: an IPv4 address (IPv4-mapped IPv6 included) as is, an IPv6 address's /64,
    /// which one subscriber usually holds whole.
    pub fn key(&self) -> IpAddr {
        match self.0 {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !u128::from(u64::MAX),
                )),
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(forwarded: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).unwrap_or_default().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4000))));
        parts
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn the_trusted_entry_is_counted_from_the_right_across_header_lines() {
        let both = parts(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(ClientIp::of(&both, 1).0, ip("10.0.0.2"));
        assert_eq!(ClientIp::of(&both, 2).0, ip("198.51.100.7"));
        assert_eq!(
            ClientIp::of(&both, 9).0,
            ip("6.6.6.6"),
            "fewer entries: the leftmost"
        );
        assert_eq!(
            ClientIp::of(&both, 0).0,
            ip("192.0.2.1"),
            "untrusted: the peer"
        );
        assert_eq!(ClientIp::of(&parts(&["not an ip"]), 1).0, ip("192.0.2.1"));
        assert_eq!(ClientIp::of(&parts(&[]), 1).0, ip("192.0.2.1"));
    }

    #[test]
    fn ipv6_keys_are_64_bit_prefixes_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            ClientIp(ip("2001:db8:1:2:3:4:5:6")).key(),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            ClientIp(ip("::ffff:198.51.100.7")).key(),
            ip("198.51.100.7")
        );
        assert_eq!(ClientIp(ip("198.51.100.7")).key(), ip("198.51.100.7"));
    }
}
