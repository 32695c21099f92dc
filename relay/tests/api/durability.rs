//! The real binary, killed with SIGKILL under concurrent write load, loses no acknowledged write;
//! a graceful restart keeps everything.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Relay {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_relay(db: &Path) -> Relay {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_STORE", format!("sqlite:{}", db.display()))
        .env("RELAY_RATE_LIMIT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the relay did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Relay { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_to_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut relay = start_relay(&db).await;
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
    relay.child.kill().unwrap(); // SIGKILL
    relay.child.wait().unwrap();
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

    let mut restarted = start_relay(&db).await;
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
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_drains_and_a_restart_serves_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut relay = start_relay(&db).await;
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
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(relay.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = relay.child.wait().unwrap();
    assert!(exit.success(), "a graceful shutdown exits 0, got {exit}");

    let mut restarted = start_relay(&db).await;
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
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
