//! Connections, as hostile or broken clients hold them: half-sent heads, idle sockets, more sockets
//! than the process has descriptors, oversized and malformed heads, and connections open at shutdown.
//! The real binary on loopback, raw sockets for what an HTTP client would never send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::helpers::*;

/// Read until the peer closes (or `limit` passes); what was read, and whether it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&seen).into_owned(), false)
}

fn connect(relay: &RelayProcess) -> TcpStream {
    TcpStream::connect(relay.base.trim_start_matches("http://")).unwrap()
}

/// The value of the series `series` (name and labels, as exposed) once `/metrics` shows it at least
/// `at_least` (the endpoint renders at most once a second), or panics after 10 s.
async fn wait_for_metric(relay: &RelayProcess, series: &str, at_least: f64) -> f64 {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client
            .get(format!("{}/metrics", relay.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = text.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        });
        if let Some(value) = value.filter(|v| *v >= at_least) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}: {value:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that sends its head a byte at a time (slowloris) is cut off `--header-read-timeout`
/// after its first byte, however steadily it trickles; the close is counted.
#[tokio::test]
async fn a_trickled_request_head_is_cut_off_after_the_header_read_timeout() {
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RELAY_HEADER_READ_TIMEOUT", "500ms"),
        ("RELAY_IDLE_TIMEOUT", "60s"),
    ])
    .await;
    let mut slow = connect(&relay);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One byte every 100 ms, for up to 10 s: each byte is progress, none may reset the head's clock.
    while started.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        let (_, eof) = read_until_closed(&mut slow, Duration::from_millis(100));
        if eof {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head trickled for 10 s was never cut off (timeout 500 ms)"
    );
    wait_for_metric(
        &relay,
        r#"relay_http_connections_closed_total{reason="header_timeout"}"#,
        1.0,
    )
    .await;
    // Meanwhile, and after, the relay serves.
    assert_eq!(
        reqwest::get(format!("{}/healthz", relay.base))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A keep-alive connection with nothing in flight is closed after `--idle-timeout`, and only then:
/// the idle wait is not the head timeout (hyper's own head timer runs from the moment a connection
/// waits, which would cut keep-alive to the head timeout).
#[tokio::test]
async fn an_idle_connection_lives_for_the_idle_timeout_not_the_header_timeout() {
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RELAY_HEADER_READ_TIMEOUT", "300ms"),
        ("RELAY_IDLE_TIMEOUT", "2s"),
    ])
    .await;
    let mut conn = connect(&relay);
    let request = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n";
    conn.write_all(request).unwrap();
    let (first, eof) = read_until_closed(&mut conn, Duration::from_millis(500));
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!eof, "closed right after the first response");
    // Idle for three head timeouts, then a second request on the same connection.
    std::thread::sleep(Duration::from_millis(900));
    conn.write_all(request).unwrap();
    let (second, eof) = read_until_closed(&mut conn, Duration::from_millis(500));
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "idle for 0.9 s (idle timeout 2 s): {second:?}, closed: {eof}"
    );
    // Then silence: closed by the idle timeout, within a few seconds.
    let (_, eof) = read_until_closed(&mut conn, Duration::from_secs(8));
    assert!(
        eof,
        "an idle connection outlived its 2 s idle timeout by 8 s"
    );
    wait_for_metric(
        &relay,
        r#"relay_http_connections_closed_total{reason="idle_timeout"}"#,
        1.0,
    )
    .await;
}

/// Open files: the relay raises its soft limit to the hard one at start, and keeps its connections
/// below it. Under a 256-descriptor limit, 400 idle sockets do not starve it: at the cap new
/// connections wait, the relay never fails to accept, and a normal request is answered once an idle
/// one times out.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn more_sockets_than_descriptors_wait_for_a_slot_and_never_exhaust_the_process() {
    let relay = spawn_binary_under(
        &["prlimit", "--nofile=256:256"],
        &[
            ("RELAY_STORE", "memory:"),
            ("RELAY_IDLE_TIMEOUT", "2s"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let mut idle: Vec<TcpStream> = (0..400).map(|_| connect(&relay)).collect();
    // A normal request from a new connection: answered, after some idle ones timed out.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client.get(format!("{}/healthz", relay.base)).send().await;
    assert!(
        response.as_ref().is_ok_and(|r| r.status() == 200),
        "with 400 idle sockets under a 256-file limit: {response:?} after {:?}",
        started.elapsed()
    );
    idle.clear();
    let log = relay.stop();
    assert!(
        log.contains("Connection limit reached"),
        "the cap was reached and said so:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(
        !log.contains("Accepting a connection failed"),
        "the relay ran out of descriptors:\n{log}"
    );
    assert!(
        log.contains(r#""max_connections":192"#),
        "256 files - 64 reserved:\n{log}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let relay = spawn_binary_under(
        &["prlimit", "--nofile=256:4096"],
        &[("RELAY_STORE", "memory:")],
    )
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3..5], ["4096", "4096"], "{line}");
}

/// hyper answers some requests by itself, before any of the relay's code runs: a head over 64 KiB
/// (431) and a malformed request line (400). They cannot carry a problem body or a request id, but
/// each gets an `info` line with its status and a count by reason.
#[tokio::test]
async fn requests_hyper_refuses_are_logged_and_counted() {
    let relay = spawn_binary(&[("RELAY_STORE", "memory:"), ("RUST_LOG", "info")]).await;
    let mut big = connect(&relay);
    let header = format!(
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let _ = big.write_all(header.as_bytes());
    let (answer, closed) = read_until_closed(&mut big, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(closed);

    let mut garbage = connect(&relay);
    garbage.write_all(b"NOT A REQUEST LINE\r\n\r\n").unwrap();
    let (answer, _) = read_until_closed(&mut garbage, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    for reason in ["head_too_large", "malformed"] {
        wait_for_metric(
            &relay,
            &format!(r#"relay_http_connections_closed_total{{reason="{reason}"}}"#),
            1.0,
        )
        .await;
    }
    let log = relay.stop();
    let refused: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "Request refused before routing.")
        .collect();
    let statuses: Vec<_> = refused.iter().map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(431), Some(400)], "{refused:?}");
    assert!(refused.iter().all(|l| l["level"] == "INFO"), "{refused:?}");
}

/// At shutdown, connections with nothing in flight close at once: an idle keep-alive socket and a
/// half-sent head do not hold the drain for its grace period.
#[tokio::test]
async fn idle_and_half_sent_connections_do_not_hold_the_shutdown() {
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RELAY_SHUTDOWN_GRACE", "60s"),
        ("RELAY_HEADER_READ_TIMEOUT", "60s"),
        ("RELAY_IDLE_TIMEOUT", "60s"),
    ])
    .await;
    let mut idle = connect(&relay);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut idle, Duration::from_millis(300));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut half = connect(&relay);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: re")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let mut relay = relay;
    relay.terminate();
    let status = relay
        .exit_within(Duration::from_secs(15))
        .await
        .expect("an idle and a half-sent connection held the shutdown for 15 s (grace 60 s)");
    assert!(status.success(), "{status}");
    for conn in [&mut idle, &mut half] {
        let (_, closed) = read_until_closed(conn, Duration::from_secs(2));
        assert!(closed, "the relay stopped, its sockets closed");
    }
}
