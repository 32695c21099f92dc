//! What broken disks do to the embedded store, on real files: a disk that fills up under the relay,
//! a restart on a full disk, a corrupt database file, a shared-memory file that becomes unwritable.
//! Readiness must mean "writes succeed"; no fault may crash the relay or answer 500.
//!
//! A full disk is a small tmpfs mounted for the test, and an unwritable file is `chattr +i`: both need
//! root (the test command runs as root in CI). Without it these tests fail, saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "this test mounts a small tmpfs to fill a disk: it needs root (`mount -t tmpfs`): {status:?}"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a filler file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// `chattr` on `path` (`+i` / `-i`), failing clearly without root or support.
fn chattr(flag: &str, path: &Path) {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "this test makes a file immutable with `chattr {flag}`: it needs root and a file system that \
         supports it: {status:?}"
    );
}

fn sqlite_env(db: &Path) -> String {
    format!("sqlite:{}", db.display())
}

async fn post(client: &reqwest::Client, base: &str, text: &str) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/messages"))
        .json(&json!({ "message": text }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `/readyz` until its status is `want` (it is computed at most once a second), or panic after 15 s.
async fn wait_for_readiness(base: &str, want: StatusCode) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = client.get(format!("{base}/readyz")).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The disk fills under the running relay: writes are answered 503 (never a false 201, never 500),
/// reads are still served, readiness fails once a write has failed, and all of it heals by itself
/// once space is free (readiness probes with a write until one commits).
#[tokio::test]
async fn a_disk_that_fills_up_fails_writes_and_readiness_and_heals_when_space_returns() {
    let disk = Tmpfs::mount("2m");
    let db = disk.path().join("relay.db");
    let relay = spawn_binary(&[("RELAY_STORE", &sqlite_env(&db))]).await;
    let client = reqwest::Client::new();
    let (status, first) = post(&client, &relay.base, "before the disk filled").await;
    assert_eq!(status, 201);

    let filler = disk.fill();
    let text = "x".repeat(4000);
    let mut refused = None;
    for _ in 0..500 {
        let (status, body) = post(&client, &relay.base, &text).await;
        assert!(
            status == 201 || status == 503,
            "a write on a full disk: {status} {body}"
        );
        if status == 503 {
            refused = Some(body);
            break;
        }
    }
    let refused = refused.expect("500 writes of 4 KB on a full 2 MB disk all succeeded");
    assert_eq!(refused["status"], 503, "{refused}");

    let not_ready = wait_for_readiness(&relay.base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        not_ready["checks"]["store"]["status"], "down",
        "{not_ready}"
    );
    let read = client
        .get(format!(
            "{}/messages/{}",
            relay.base,
            first["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads are served on a full disk");

    std::fs::remove_file(filler).unwrap();
    wait_for_readiness(&relay.base, StatusCode::OK).await;
    let (status, body) = post(&client, &relay.base, "after space came back").await;
    assert_eq!(status, 201, "{body}");
    drop(relay);
}

/// Restarting where the database cannot be written: on a full disk (the start used to fail: it
/// always wrote its schema), or on a file system mounted read-only (then the file is opened for
/// reads alone, without the shared-memory file SQLite cannot create). Either way the relay starts,
/// serves reads, refuses writes with 503, and reports not ready, saying why.
#[tokio::test]
async fn a_relay_restarted_on_a_full_disk_serves_reads_and_refuses_writes() {
    let disk = Tmpfs::mount("1m");
    let (db, message) = a_stopped_relay_with_one_message(&disk).await;
    let _filler = disk.fill();
    let reason = serves_reads_only(&db, &message).await;
    assert!(reason.contains("serving reads only"), "{reason}");
    assert!(reason.contains("Free space"), "{reason}");
}

#[tokio::test]
async fn a_relay_restarted_on_a_read_only_file_system_serves_reads_and_refuses_writes() {
    let disk = Tmpfs::mount("1m");
    let (db, message) = a_stopped_relay_with_one_message(&disk).await;
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(remount.success());
    let reason = serves_reads_only(&db, &message).await;
    assert!(reason.contains("serving reads only"), "{reason}");
    assert!(reason.contains(&db.display().to_string()), "{reason}");
}

/// A relay on `disk` that wrote one message and stopped cleanly: the database and that message.
async fn a_stopped_relay_with_one_message(disk: &Tmpfs) -> (PathBuf, Value) {
    let db = disk.path().join("relay.db");
    let relay = spawn_binary(&[("RELAY_STORE", &sqlite_env(&db))]).await;
    let (status, message) = post(
        &reqwest::Client::new(),
        &relay.base,
        "kept across the restart",
    )
    .await;
    assert_eq!(status, 201);
    relay.stop();
    (db, message)
}

/// Start a relay on `db`, which it cannot write, and check it serves `message` and the count but
/// refuses writes and readiness; returns readiness's reason.
async fn serves_reads_only(db: &Path, message: &Value) -> String {
    let client = reqwest::Client::new();
    let relay = spawn_binary_live(&[("RELAY_STORE", &sqlite_env(db))]).await;
    let read = client
        .get(format!(
            "{}/messages/{}",
            relay.base,
            message["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["message"], "kept across the restart");
    assert_eq!(
        client
            .get(format!("{}/messages", relay.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["count"],
        1
    );
    let (status, body) = post(&client, &relay.base, "no room").await;
    assert_eq!(status, 503, "{body}");
    let not_ready = wait_for_readiness(&relay.base, StatusCode::SERVICE_UNAVAILABLE).await;
    not_ready["checks"]["store"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Deterministic garbage (a xorshift stream), so a failure reproduces.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A database with 32 KiB of garbage in the middle: refused at start, naming the file and the way
/// out. Served anyway (`--integrity-check off`), a read of a damaged page is a 503 problem, never a
/// 500; from then on readiness fails and writes are refused, so nothing is written to a corrupt file.
#[tokio::test]
async fn a_corrupt_database_is_refused_at_start_and_never_answers_500() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let store = sqlite_env(&db);
    let relay = spawn_binary(&[("RELAY_STORE", &store)]).await;
    let client = reqwest::Client::new();
    let text = "m".repeat(1000);
    let mut ids = Vec::new();
    for _ in 0..400 {
        let (status, body) = post(&client, &relay.base, &text).await;
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    relay.stop();

    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 256 * 1024, "the database is only {len} bytes");
    let middle = (len / 2) & !4095;
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(middle)).unwrap();
    file.write_all(&garbage(32 * 1024)).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_STORE", &store)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a corrupt file was served:\n{said}"
    );
    assert!(
        said.contains("is corrupt")
            && said.contains(&db.display().to_string())
            && said.contains(".recover"),
        "the refusal names the file and the recovery:\n{said}"
    );

    let relay = spawn_binary(&[("RELAY_STORE", &store), ("RELAY_INTEGRITY_CHECK", "off")]).await;
    let mut unavailable = 0;
    for id in &ids {
        let response = client
            .get(format!("{}/messages/{id}", relay.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status == 200 || status == 503,
            "a read of a corrupt file: {status} {}",
            response.text().await.unwrap()
        );
        if status == 503 {
            unavailable += 1;
        }
    }
    assert!(unavailable > 0, "no read of 400 met the 32 KiB of garbage");
    let not_ready = wait_for_readiness(&relay.base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        not_ready["checks"]["store"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt"),
        "{not_ready}"
    );
    let (status, body) = post(&client, &relay.base, "not into a corrupt file").await;
    assert_eq!(status, 503, "{body}");
}

/// The shared-memory file becomes unwritable (`chattr +i`) under the running relay. SQLite maps it
/// into memory, so its next write to it used to kill the process with SIGBUS: now writes and
/// readiness fail with 503 naming the file, the relay lives, and it heals once the file is writable
/// again. A relay started with such a file refuses to start, saying why.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unwritable_shared_memory_file_fails_requests_never_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let shm = dir.path().join("relay.db-shm");
    let store = sqlite_env(&db);
    let mut relay = spawn_binary(&[("RELAY_STORE", &store)]).await;
    let client = reqwest::Client::new();
    let (status, _) = post(&client, &relay.base, "before").await;
    assert_eq!(status, 201);

    chattr("+i", &shm);
    struct Mutable<'a>(&'a Path);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
    }
    let guard = Mutable(&shm);
    for _ in 0..50 {
        let (status, body) = post(&client, &relay.base, &"y".repeat(2000)).await;
        assert_eq!(status, 503, "{body}");
    }
    assert!(relay.child.try_wait().unwrap().is_none(), "the relay died");
    let not_ready = wait_for_readiness(&relay.base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        not_ready["checks"]["store"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("relay.db-shm"),
        "{not_ready}"
    );

    chattr("-i", &shm);
    wait_for_readiness(&relay.base, StatusCode::OK).await;
    let (status, body) = post(&client, &relay.base, "after").await;
    assert_eq!(status, 201, "{body}");

    // Killed, so the shared-memory file stays; made immutable, a new relay must refuse it.
    relay.kill();
    chattr("+i", &shm);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_STORE", &store)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("relay.db-shm cannot be written"), "{said}");
    drop(guard);
}
