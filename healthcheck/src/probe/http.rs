//! The HTTP session one probe attempt runs in: it sends the probe's `x-request-id` and a W3C
//! `traceparent` of the attempt's trace (a new parent span id per request) on every request,
//! records each request as a `Step` (method, path, status, latency, the request id the relay returned),
//! and turns every way a response can disappoint into a `Failure` with a precise reason.
//!
//! It must never retry, follow redirects or decompress on its own: a probe sees what a client would
//! see on the first try, and the runner alone decides about retries.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use telemetry_core::trace::{SpanId, TraceId, TraceParent};

use crate::config::Target;
use crate::names::FailureKind;
use crate::outcome::{Failure, Step};
use crate::text::{millis, one_line};

/// The header that carries request ids, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// Bodies longer than this are not read whole: no probe needs more, and a runaway response must not
/// exhaust a 128 MB Lambda.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One probe attempt's connection pool, request id and record of requests.
pub struct Session<'a> {
    client: reqwest::Client,
    target: &'a Target,
    timeout: Duration,
    request_id: String,
    trace_id: TraceId,
    steps: Vec<Step>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Fetched {
    pub method: Method,
    /// The path (and query) as requested, for reasons and reports.
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl<'a> Session<'a> {
    /// A fresh session: its own client, so each probe pays for its own connection as a new visitor
    /// would, and no probe's latency depends on which probe happened to run first.
    pub fn new(
        target: &'a Target,
        timeout: Duration,
        request_id: String,
        trace_id: TraceId,
    ) -> Result<Self, Failure> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("relayops-healthcheck/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Failure::new(
                    FailureKind::Request,
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            client,
            target,
            timeout,
            request_id,
            trace_id,
            steps: Vec::new(),
        })
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// A `traceparent` for the next request: the attempt's trace, a new span of the canary's.
    fn traceparent(&self) -> String {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: SpanId::random(),
            sampled: true,
        }
        .to_string()
    }

    pub fn into_steps(self) -> Vec<Step> {
        self.steps
    }

    /// The URL of `path` under the target.
    pub fn url(&self, path: &str) -> Result<Url, Failure> {
        self.target
            .url(path)
            .map_err(|e| Failure::new(FailureKind::Request, e.to_string()))
    }

    pub async fn get(&mut self, path: &str) -> Result<Fetched, Failure> {
        let url = self.url(path)?;
        self.send(Method::GET, url, None).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<Fetched, Failure> {
        let url = self.url(path)?;
        self.send(Method::DELETE, url, None).await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Fetched, Failure> {
        let url = self.url(path)?;
        self.send(Method::POST, url, Some(body)).await
    }

    /// Send one request and read the whole response; record it as a step either way.
    pub async fn send(
        &mut self,
        method: Method,
        url: Url,
        json: Option<&serde_json::Value>,
    ) -> Result<Fetched, Failure> {
        let path = display_path(&url);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(REQUEST_ID, self.request_id.as_str())
            .header(TRACEPARENT, self.traceparent());
        if let Some(json) = json {
            request = request.json(json);
        }
        let start = Instant::now();
        let outcome = async {
            let mut response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_BODY_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let latency = start.elapsed();
        match outcome {
            Ok((status, headers, body)) => {
                self.steps.push(Step {
                    method: method.to_string(),
                    path: path.clone(),
                    status: Some(status.as_u16()),
                    latency_ms: millis(latency),
                    request_id: header_str(&headers, REQUEST_ID).map(str::to_owned),
                });
                Ok(Fetched {
                    method,
                    path,
                    status,
                    headers,
                    body,
                })
            }
            Err(error) => {
                self.steps.push(Step {
                    method: method.to_string(),
                    path: path.clone(),
                    status: None,
                    latency_ms: millis(latency),
                    request_id: None,
                });
                Err(transport_failure(
                    &method,
                    &path,
                    &url,
                    &error,
                    self.timeout,
                ))
            }
        }
    }
}

/// The path and query of `url`, as a report shows it.
fn display_path(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Why a request got no response, in words an on-call engineer can act on.
fn transport_failure(
    method: &Method,
    path: &str,
    url: &Url,
    error: &reqwest::Error,
    timeout: Duration,
) -> Failure {
    let host = match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => url.to_string(),
    };
    if error.is_timeout() {
        return Failure::new(
            FailureKind::Timeout,
            format!(
                "{method} {path}: no response within {} ms (the timeout)",
                timeout.as_millis()
            ),
        );
    }
    let cause = root_cause(error);
    if error.is_connect() {
        return Failure::new(
            FailureKind::Connect,
            format!("{method} {path}: cannot connect to {host}: {cause}"),
        );
    }
    Failure::new(
        FailureKind::Request,
        format!("{method} {path}: the request to {host} failed: {cause}"),
    )
}

/// The innermost error message (reqwest wraps the OS error, e.g. "Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

pub fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
}

impl Fetched {
    /// `METHOD /path`, the prefix of every reason about this response.
    pub fn what(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Fail unless the status is `expected`; the reason carries the problem `detail` (or the start of
    /// the body), so a 503 says *why* the relay is unavailable.
    pub fn expect_status(&self, expected: StatusCode) -> Result<(), Failure> {
        if self.status == expected {
            return Ok(());
        }
        let mut reason = format!(
            "{} answered {}, expected {}",
            self.what(),
            status_text(self.status),
            status_text(expected)
        );
        if let Some(detail) = self.problem_detail() {
            reason.push_str(": ");
            reason.push_str(&detail);
        }
        Err(self.fail(FailureKind::Status, reason))
    }

    /// Fail unless the media type (before any `;`) is one of `expected`.
    pub fn expect_content_type(&self, expected: &[&str]) -> Result<(), Failure> {
        let given = header_str(&self.headers, CONTENT_TYPE.as_str()).unwrap_or("");
        let media = given
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if expected.iter().any(|e| media == *e) {
            return Ok(());
        }
        let given = if given.is_empty() { "none" } else { given };
        Err(self.fail(
            FailureKind::ContentType,
            format!(
                "{} has content-type {}, expected {}",
                self.what(),
                one_line(given, 80),
                expected.join(" or ")
            ),
        ))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Failure> {
        std::str::from_utf8(&self.body)
            .map_err(|_| self.body_failure("the body is not UTF-8 text".to_owned()))
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self, shape: &str) -> Result<T, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            self.body_failure(format!(
                "the body is not {shape}: {e} (body starts {})",
                quoted_start(&self.body)
            ))
        })
    }

    /// A `FailureKind::Body` about this response.
    pub fn body_failure(&self, why: String) -> Failure {
        self.fail(FailureKind::Body, format!("{}: {why}", self.what()))
    }

    /// A `FailureKind::Mismatch` about this response: it was well-formed but said the wrong thing.
    pub fn mismatch(&self, why: String) -> Failure {
        self.fail(FailureKind::Mismatch, format!("{}: {why}", self.what()))
    }

    /// The `x-request-id` the relay answered with.
    pub fn request_id(&self) -> Option<&str> {
        header_str(&self.headers, REQUEST_ID)
    }

    /// A failure about this response, carrying its status and request id.
    pub fn fail(&self, kind: FailureKind, reason: String) -> Failure {
        Failure {
            kind,
            reason,
            status: Some(self.status.as_u16()),
            request_id: self.request_id().map(str::to_owned),
        }
    }

    /// The `detail` of a problem document, else the start of the body.
    fn problem_detail(&self) -> Option<String> {
        if self.body.is_empty() {
            return None;
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned));
        Some(match detail {
            Some(detail) => one_line(&detail, 200),
            None => format!("body starts {}", quoted_start(&self.body)),
        })
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The first characters of a body, quoted and on one line.
pub fn quoted_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(240)]);
    format!("\"{}\"", one_line(&text, 60))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn fetched(status: u16, content_type: &str, body: &str) -> Fetched {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        Fetched {
            method: Method::GET,
            path: "/readyz".into(),
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_wrong_status_names_the_problem_detail() {
        let response = fetched(
            503,
            "application/problem+json",
            r#"{"type":"urn:relayops:problem:not-ready","detail":"the store is down: closed"}"#,
        );
        let failure = response.expect_status(StatusCode::OK).unwrap_err();
        assert_eq!(failure.kind, FailureKind::Status);
        assert_eq!(failure.status, Some(503));
        assert_eq!(
            failure.reason,
            "GET /readyz answered 503 Service Unavailable, expected 200 OK: the store is down: closed"
        );
    }

    #[test]
    fn a_wrong_status_without_a_problem_quotes_the_body() {
        let failure = fetched(500, "text/plain", "boom\nstack trace")
            .expect_status(StatusCode::OK)
            .unwrap_err();
        assert!(
            failure
                .reason
                .ends_with(r#"body starts "boom stack trace""#),
            "{}",
            failure.reason
        );
    }

    #[test]
    fn content_types_compare_by_media_type() {
        let html = fetched(200, "text/html; charset=utf-8", "<h1>x</h1>");
        assert!(html.expect_content_type(&["text/html"]).is_ok());
        let failure = html.expect_content_type(&["text/css"]).unwrap_err();
        assert_eq!(failure.kind, FailureKind::ContentType);
        assert_eq!(
            failure.reason,
            "GET /readyz has content-type text/html; charset=utf-8, expected text/css"
        );
        let none = fetched(200, "", "x")
            .expect_content_type(&["text/css"])
            .unwrap_err();
        assert!(none.reason.contains("content-type none"), "{}", none.reason);
    }

    #[test]
    fn bodies_that_are_not_the_expected_json_say_so() {
        let failure = fetched(200, "application/json", "<html>")
            .json::<serde_json::Value>("JSON")
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Body);
        assert!(
            failure
                .reason
                .starts_with("GET /readyz: the body is not JSON:"),
            "{}",
            failure.reason
        );
        assert!(
            failure.reason.ends_with(r#"(body starts "<html>")"#),
            "{}",
            failure.reason
        );
    }

    #[test]
    fn one_line_flattens_and_truncates() {
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn latencies_keep_microseconds() {
        assert_eq!(millis(Duration::from_micros(1234)), 1.234);
    }
}
