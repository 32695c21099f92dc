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
