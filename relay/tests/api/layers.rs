//! Cross-cutting behaviour: request ids, problem responses from layers, rate limiting, body limits,
//! timeouts, CORS, compression and security headers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_good_one_is_kept() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/messages",
        "/nope",
        "/",
        "/openapi.json",
        "/metrics",
    ] {
        let response = app.get(path).await;
        let id = response
            .headers()
            .get("x-request-id")
            .expect(path)
            .to_str()
            .unwrap();
        let uuid = uuid::Uuid::parse_str(id)
            .unwrap_or_else(|e| panic!("{path}: generated ids are UUIDs, got {id}: {e}"));
        assert_eq!(
            uuid.get_version_num(),
            7,
            "{path}: v7, so ids sort by time: {id}"
        );
        let (seconds, _) = uuid.get_timestamp().expect("v7 has a timestamp").to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            seconds.abs_diff(now) < 3600,
            "{path}: the id's time is now: {id}"
        );
    }
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-abc.123:x_y")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-abc.123:x_y");
    let replaced = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "an unsafe incoming id is replaced, got {id}"
    );
}

#[tokio::test]
async fn router_and_layer_errors_are_problems_too() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/no/such/route").await,
        StatusCode::NOT_FOUND,
        "route-not-found",
    )
    .await;
    let patch = app.client.patch(app.url("/messages")).send().await.unwrap();
    assert!(patch.headers().contains_key("allow"));
    assert_problem(patch, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_declared_or_streamed() {
    let app = spawn_with(|c| {
        c.max_body_bytes = 2048;
        c.request_timeout = Duration::from_secs(60);
    })
    .await;
    let big = json!({"message": "x".repeat(4096)});
    let declared = app.post_message(big.clone()).await;
    assert_problem(declared, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    // Declared and never sent: answered from the length alone. Waiting for the body instead would get
    // no answer within the exchange's 5 s (the request timeout here is a minute).
    let answer = raw_exchange(
        app.addr,
        b"POST /messages HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("urn:relayops:problem:payload-too-large")
            && answer.contains("x-request-id"),
        "{answer}"
    );
    // Chunked: no Content-Length to reject up front; the limit applies while reading.
    let body = big.to_string();
    let mut request = String::from(
        "POST /messages HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for chunk in body.as_bytes().chunks(512) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw_exchange(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("urn:relayops:problem:payload-too-large"),
        "{answer}"
    );
    assert_eq!(app.count().await, 0);
}

/// Send raw bytes, return what the server answered before closing or 5 s passed.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything; a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn clients_over_their_rate_get_429_with_retry_after_and_probes_are_exempt() {
    let app = spawn_with(|c| {
        c.rate_limit = 1;
        c.rate_limit_burst = Some(3);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/messages").await.status(), StatusCode::OK);
    }
    let limited = app.get("/messages").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::OK,
            "{path} is not rate limited"
        );
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"relay_rate_limited_total{route="/messages"}"#),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.get("/messages").await.status(),
        StatusCode::OK,
        "the bucket refills"
    );
}

/// A relay limiting every client to `burst` requests at 1 a second, behind `hops` trusted proxies.
async fn spawn_behind_proxies(hops: u8, burst: u32) -> TestApp {
    spawn_with(|c| {
        c.rate_limit = 1;
        c.rate_limit_burst = Some(burst);
        c.trusted_proxy_hops = hops;
    })
    .await
}

/// `GET /messages` with `X-Forwarded-For: forwarded`: its status.
async fn get_forwarded(app: &TestApp, forwarded: &str) -> StatusCode {
    app.client
        .get(app.url("/messages"))
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .unwrap()
        .status()
}

/// Behind one appending proxy, `X-Forwarded-For: <anything the client sent>, <client as the proxy saw
/// it>`: the bucket is the proxy's entry (the rightmost), so a client cannot pick a fresh one per request.
#[tokio::test]
async fn behind_a_trusted_proxy_the_bucket_is_the_address_the_proxy_added() {
    let app = spawn_behind_proxies(1, 2).await;
    for k in 0..2 {
        let forwarded = format!("10.9.{k}.1, 198.51.100.7");
        assert_eq!(get_forwarded(&app, &forwarded).await, StatusCode::OK);
    }
    assert_eq!(
        get_forwarded(&app, "10.9.99.1, 198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a made-up leftmost entry is no new bucket"
    );
    assert_eq!(
        get_forwarded(&app, "10.9.0.1, 198.51.100.8").await,
        StatusCode::OK,
        "another client, as the proxy saw it, has its own bucket"
    );
}

/// Two trusted proxies: the client is the entry the outer one added, second from the right.
#[tokio::test]
async fn with_two_trusted_proxy_hops_the_bucket_is_second_from_the_right() {
    let app = spawn_behind_proxies(2, 1).await;
    let get = |forwarded| get_forwarded(&app, forwarded);
    assert_eq!(get("1.1.1.1, 203.0.113.5, 10.0.0.2").await, StatusCode::OK);
    assert_eq!(
        get("2.2.2.2, 203.0.113.5, 10.0.0.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get("1.1.1.1, 203.0.113.6, 10.0.0.2").await, StatusCode::OK);
}

/// One IPv6 client holds a whole /64: a fresh address from it is no fresh bucket.
#[tokio::test]
async fn ipv6_clients_are_keyed_by_their_64_bit_prefix() {
    let app = spawn_behind_proxies(1, 1).await;
    let get = |forwarded| get_forwarded(&app, forwarded);
    assert_eq!(get("2001:db8:1:2::1").await, StatusCode::OK);
    assert_eq!(
        get("2001:db8:1:2:ffff::9").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get("2001:db8:1:3::1").await, StatusCode::OK, "another /64");
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_a_503_problem() {
    // A slow-body client: it promises 100 bytes and sends 10, then waits.
    let app = spawn_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /messages HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"message\"";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered before the test's own deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("urn:relayops:problem:timeout"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
}

#[tokio::test]
async fn cors_admits_only_configured_origins() {
    let app = spawn_with(|c| c.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/messages"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let simple = app
        .client
        .get(app.url("/messages"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let foreign = app
        .client
        .get(app.url("/messages"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let same_origin_only = spawn_app().await;
    let response = same_origin_only
        .client
        .get(same_origin_only.url("/messages"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let plain = app.get("/openapi.json").await;
    assert!(plain.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn html_pages_carry_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/saved"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'"),
            "{path}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn the_web_app_and_its_assets_are_served_with_etags() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let again = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    let html = app.get("/").await.text().await.unwrap();
    assert!(html.contains("/assets/app.js"), "the page loads its script");
}

#[tokio::test]
async fn no_client_mistake_gets_a_server_error() {
    // A sweep of malformed requests across every route: each must be answered 4xx, never 5xx.
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();
    let paths = [
        "/messages",
        &format!("/messages/{id}"),
        "/messages/%ZZ",
        "/messages/%F0%28",
        "/paste",
        &format!("/paste/{id}"),
        "/app",
        "/saved",
        "/app?limit=%FF",
    ];
    let bodies: &[(&str, &[u8])] = &[
        ("application/json", b"{\"message\": \"\\ud800\"}"),
        ("application/json", b"{\"message\": [1,2]}"),
        ("application/json", &[0xff, 0x00, 0x01]),
        ("application/json", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
        ("text/plain", b"hello"),
        ("application/json; charset=utf-16", b"{}"),
    ];
    for path in paths {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
            reqwest::Method::PATCH,
        ] {
            for (content_type, body) in bodies {
                let response = app
                    .client
                    .request(method.clone(), app.url(path))
                    .header("content-type", *content_type)
                    .header("if-match", "garbage")
                    .body(body.to_vec())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                assert!(
                    !status.is_server_error(),
                    "{method} {path} {content_type}: {status}"
                );
                assert!(response.headers().contains_key("x-request-id"));
            }
        }
    }
}

/// Send raw bytes; return what came back and whether the server closed the connection within 5 s
/// (`false`: it was still open, i.e. the server was holding the connection).
async fn raw_exchange_closed(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test]
async fn header_floods_are_refused_and_the_relay_keeps_serving() {
    let app = spawn_app().await;
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: relay\r\n");
    for i in 0..2000 {
        many.push_str(&format!("x-flood-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nx-huge: {}\r\n\r\n",
        "a".repeat(4 << 20)
    );
    for (what, request) in [("2000 headers", many), ("one 4 MiB header", huge)] {
        // Several at once, while an ordinary client keeps being served.
        let floods: Vec<_> = (0..8)
            .map(|_| {
                let (addr, request) = (app.addr, request.clone());
                tokio::spawn(async move { raw_exchange_closed(addr, request.as_bytes()).await })
            })
            .collect();
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "{what}");
        for flood in floods {
            let (answer, closed) = flood.await.unwrap();
            assert!(closed, "{what}: the connection is closed, not held open");
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
                "{what}: refused with 431 or a closed connection, got: {}",
                answer.lines().next().unwrap_or_default()
            );
        }
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "{what}");
    }
}
