//! The real binary, killed with SIGKILL under concurrent write load, loses no acknowledged write;
//! a graceful restart keeps everything.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{RelayProcess, spawn_binary};

async fn start_relay(db: &Path) -> RelayProcess {
    spawn_binary(&[("RELAY_STORE", &format!("sqlite:{}", db.display()))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_to_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let relay = start_relay(&db).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let client = reqwest::Client::new();
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (client, base, acked) = (client.clone(), relay.base.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0;
                // Keep writing through the kill: requests in flight at that moment must fail, not be acked.
                while Instant::now() < stop_at + Duration::from_millis(500) {
                    let text = format!("writer {w} message {i}");
                    i += 1;
                    let Ok(response) = client
                        .post(format!("{base}/messages"))
                        .json(&json!({"message": text}))
                        .send()
                        .await
                    else {
                        break;
                    };
                    if response.status() != StatusCode::CREATED {
                        continue;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    acked
                        .lock()
                        .await
                        .push((body["id"].as_str().unwrap().to_owned(), text));
                }
            })
        })
        .collect();
    tokio::time::sleep_until((stop_at).into()).await;
    relay.kill();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    eprintln!(
        "kill -9 test: {} writes acknowledged before SIGKILL",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "the load was real: {} acknowledged writes",
        acked.len()
    );

    let restarted = start_relay(&db).await;
    let count: Value = client
        .get(format!("{}/messages", restarted.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        count["count"].as_u64().unwrap() >= acked.len() as u64,
        "count {count} < acked {}",
        acked.len()
    );
    for (id, text) in &acked {
        let response = client
            .get(format!("{}/messages/{id}", restarted.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged message {id} was lost"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], *text);
    }
    restarted.kill();
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_drains_and_a_restart_serves_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let relay = start_relay(&db).await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/messages", relay.base))
        .json(&json!({"message": "still here"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    relay.stop();

    let restarted = start_relay(&db).await;
    let read: Value = client
        .get(format!(
            "{}/messages/{}",
            restarted.base,
            created["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read, created);
    restarted.stop();
}

/// A first SIGTERM drains (here: a request whose body never finishes holds the drain for the whole
/// grace period); a second one stops at once.
#[cfg(unix)]
#[tokio::test]
async fn a_second_sigterm_while_draining_stops_at_once() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut relay = spawn_binary(&[
        ("RELAY_STORE", &format!("sqlite:{}", db.display())),
        ("RELAY_SHUTDOWN_GRACE", "120s"),
        // Or the unfinished request would end by itself, and the drain with it.
        ("RELAY_REQUEST_TIMEOUT", "120s"),
    ])
    .await;
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /messages HTTP/1.1\r\nHost: relay\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"message\"",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.terminate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "after one SIGTERM the relay drains: the unfinished request holds it"
    );
    relay.terminate();
    let status = relay.exit_within(Duration::from_secs(30)).await.expect(
        "the relay still runs 30 s after a second SIGTERM (its grace and request timeout are 120 s)",
    );
    assert!(status.success(), "{status}");
    drop(slow);
}

/// A second relay on the same SQLite file would serve from its own cache what the first one deleted:
/// it must refuse to start, saying which file and why, and the first one keeps serving.
#[tokio::test]
async fn a_second_relay_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let first = start_relay(&db).await;
    let second = tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
                .env("RELAY_STORE", format!("sqlite:{}", db.display()))
                .env("RELAY_LISTEN", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second relay exits instead of serving")
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("another relay") && said.contains(&db.display().to_string()),
        "{said}"
    );
    let still = reqwest::get(format!("{}/readyz", first.base))
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        StatusCode::OK,
        "the first relay keeps serving"
    );
    drop(first);
}

/// Deleting the database file under a running relay: writes would go to a file nobody can open again,
/// so they must fail (503), and readiness must say why, instead of 201s that a restart loses.
#[cfg(unix)]
#[tokio::test]
async fn a_database_deleted_while_running_fails_writes_and_readiness() {
    use crate::helpers::{spawn_with, temp_sqlite};

    let (dir, uri) = temp_sqlite();
    let app = spawn_with(|c| c.store = uri.clone()).await;
    assert_eq!(app.create("before", None).await["message"], "before");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("relay.db") && !name.ends_with(".lock") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let write = app.post_message(json!({"message": "after"})).await;
    assert_eq!(
        write.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a write to a deleted file is refused"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.text().await.unwrap();
    assert!(body.contains("deleted"), "{body}");
}

/// stdout's reader stalls (a pipe nobody reads): the relay keeps answering, drops what it cannot log,
/// and once the reader is back says how many lines it dropped, in one WARN line and a counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_log_reader_costs_log_lines_not_the_service() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let port = crate::helpers::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_STORE", "memory:")
        .env("RELAY_RATE_LIMIT", "0")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < ready, "the relay did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Far more log than the pipe (64 KiB) and the relay's buffer (4 MiB) hold, nobody reading.
    let long_id = format!("/messages/{}", "0".repeat(200));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}{long_id}"));
            tokio::spawn(async move {
                for _ in 0..1200 {
                    let status = client.get(&url).send().await.unwrap().status();
                    assert_eq!(status, StatusCode::BAD_REQUEST);
                }
            })
        })
        .collect();
    for task in load {
        task.await.unwrap();
    }
    let healthz = client.get(format!("{base}/healthz")).send().await;
    assert_eq!(
        healthz.map(|r| r.status()).ok(),
        Some(StatusCode::OK),
        "the relay answers while nobody reads its log"
    );
    // The reader comes back.
    let mut pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        let mut pending = Vec::new();
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        assert!(
            Instant::now() < deadline,
            "no line said how many were dropped"
        );
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("Log lines dropped") => break line,
            _ => {}
        }
    };
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["level"], "WARN");
    let dropped = report["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{report}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relay_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= dropped, "{counted} counted, {dropped} reported");
    let _ = child.kill();
    let _ = child.wait();
}

/// Creates queued behind a locked database time out with 503 "retry": none of them may be written
/// after the client was told it failed (a retry would then make a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_answered_503_is_never_committed_later() {
    use crate::helpers::{spawn_with, temp_sqlite};

    let (dir, uri) = temp_sqlite();
    let app = spawn_with(|c| {
        c.store = uri.clone();
        c.request_timeout = Duration::from_secs(1);
    })
    .await;
    assert_eq!(app.count().await, 0);
    // Another connection holds the write lock for 3 s: every create waits in the writer's queue.
    let db = dir.path().join("relay.db");
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_secs(3));
        conn.execute_batch("COMMIT").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (client, url) = (app.client.clone(), app.url("/messages"));
        creates.spawn(async move {
            client
                .post(url)
                .json(&json!({"message": format!("queued {i}")}))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = creates.join_all().await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    holder.join().unwrap();
    // Time for anything still queued to run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.count().await, 0, "a create answered 503 was stored");
}
