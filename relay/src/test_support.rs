//! What the tests of this crate and of the canary share (behind the `test-support` feature, never in a
//! production build): [`spawn_app`] starts the relay on 127.0.0.1:0 in this process, through
//! [`Application`](crate::startup::Application) as `relay serve` does, and returns a [`TestApp`] with
//! typed helpers; [`spawn_binary`] starts a real relay binary. Logs print only when `TEST_LOG` is set.
//! Test code: it panics on anything unexpected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Config, LogFormat, StoreUri};
use crate::startup::Application;
use crate::store::DynStore;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The store the relay serves from, for tests that look behind the API.
    pub store: DynStore,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let mut config = Config::for_tests();
            config.log_format = LogFormat::Pretty;
            config.environment = "test".into();
            let guard = crate::telemetry::init_logging(&config, crate::telemetry::Runtime::Lambda);
            std::mem::forget(guard);
        }
    });
}

/// A relay on the memory store with rate limiting off.
pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// A relay with the test defaults (memory store, rate limiting off, a free port, 5 s drain) changed
/// by `configure`.
pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let mut config = Config::for_tests();
    config.rate_limit = 0;
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.shutdown_grace = Duration::from_secs(5);
    configure(&mut config);
    let application = Application::build(&config).await.expect("start the relay");
    let addr = application.local_addr();
    let store = application.store();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        store,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A sqlite store in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_sqlite() -> (tempfile::TempDir, StoreUri) {
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = StoreUri::Sqlite(dir.path().join("relay.db"));
    (dir, uri)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_message(&self, body: Value) -> Response {
        self.client
            .post(self.url("/messages"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Create a message and return its resource; panics unless the relay answers 201.
    pub async fn create(&self, text: &str, ttl: Option<i64>) -> Value {
        let mut body = json!({ "message": text });
        if let Some(ttl) = ttl {
            body["ttl_seconds"] = json!(ttl);
        }
        let response = self.post_message(body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn put_json(&self, path: &str, body: Value) -> Response {
        self.client
            .put(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn count(&self) -> u64 {
        let response = self.get("/messages").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["count"].as_u64().expect("count is a number")
    }

    /// Stop serving and close the store (as SIGTERM would).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("serve");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Assert `response` is a problem document with `status`, the given type suffix and a request id
/// equal to the `x-request-id` header; return the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("every response carries x-request-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let content_type = response
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("urn:relayops:problem:{code}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(body["request_id"], header_id, "{body}");
    body
}

/// The real relay binary, started on a free loopback port.
pub struct RelayProcess {
    pub child: std::process::Child,
    pub base: String,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// A free loopback port (bound and released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the relay binary at `binary` (a test's `env!("CARGO_BIN_EXE_relay")`) with `envs` (plus a free
/// `RELAY_LISTEN`, rate limiting off, `RUST_LOG=warn`, each overridable) and wait until `/readyz` is 200.
/// Its stdout is collected and returned by `stop`.
pub async fn spawn_binary(binary: &str, envs: &[(&str, &str)]) -> RelayProcess {
    spawn_binary_under(&[], binary, envs).await
}

/// [`spawn_binary`] through a wrapper that execs it (`["prlimit", "--nofile=256"]`: the process is
/// still the relay's).
pub async fn spawn_binary_under(
    wrapper: &[&str],
    binary: &str,
    envs: &[(&str, &str)],
) -> RelayProcess {
    start_binary(wrapper, binary, envs, "/readyz").await
}

/// [`spawn_binary`], but waiting only until the relay is alive (`/healthz`), for a relay that serves
/// without being ready.
pub async fn spawn_binary_live(binary: &str, envs: &[(&str, &str)]) -> RelayProcess {
    start_binary(&[], binary, envs, "/healthz").await
}

async fn start_binary(
    wrapper: &[&str],
    binary: &str,
    envs: &[(&str, &str)],
    wait_for: &str,
) -> RelayProcess {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let port = free_port();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_RATE_LIMIT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}{wait_for}")).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        // Exited, or still not answering: say what it printed.
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().ok();
            let printed = stdout.join().unwrap_or_default();
            panic!(
                "the relay did not answer {wait_for} with 200 within 20 s (exit: {status:?}); \
                 it printed:\n{printed}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    RelayProcess {
        child,
        base,
        stdout: Some(stdout),
    }
}

impl RelayProcess {
    /// Create a message and return the URL that reads it back; panics unless the relay answers 201.
    pub async fn create(&self, client: &reqwest::Client, text: &str) -> String {
        let response = client
            .post(format!("{}/messages", self.base))
            .json(&json!({ "message": text }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.expect("json");
        let id = created["id"].as_str().expect("an id");
        format!("{}/messages/{id}", self.base)
    }

    /// Send SIGTERM (a graceful stop); panics if it could not be sent.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {pid}: {sent:?}"
        );
    }

    /// The exit status once the process has ended, or `None` if it still runs after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a graceful stop that flushes logs), wait, and return everything it printed on stdout.
    pub fn stop(mut self) -> String {
        // Not `terminate`: a relay that already exited is reported by its exit status below.
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a graceful stop exits 0, got {status}");
        self.stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local AWS-API server's endpoint (`AWS_ENDPOINT_URL`). Tests that need it fail, never skip, when
/// it is not running.
pub fn aws_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs the local AWS-API server and AWS_ENDPOINT_URL: run it through \
             ./scripts/test.sh, or start one with \
             `./scripts/aws-local.sh install && eval \"$(./scripts/aws-local.sh start)\"`"
        ),
    }
}
