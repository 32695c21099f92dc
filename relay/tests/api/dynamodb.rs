//! The DynamoDB store against a local DynamoDB-API server (moto): the conformance suite, the table
//! design, the sweeper's exact count, HTTP round trips, `relay create-table`, and an outage (a hung,
//! then killed, then restarted server) that must give 503s and heal without restarting the relay.
//!
//! These tests need the server that `scripts/aws-local.sh start` runs (its environment gives the
//! endpoint, region and dummy credentials); without it they fail with how to start it, never skip.
//! The outage test starts and kills its own server, never the shared one.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use relay::config::StoreUri;
use relay::domain::{IdempotencyKey, Message, MessageBody, Ttl, now};
use relay::store::dynamodb::schema::{
    EXPIRES_AT, EXPIRY_BUCKET, TTL_AT, TTL_GRACE_SECONDS, message_key,
};
use relay::store::dynamodb::{DynamoStore, TABLE, TableCreated};
use relay::store::{Created, DynStore, Store, StoreError, conformance};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, free_port, parse_lines, spawn_binary, spawn_with};

/// The shared local server's endpoint; a clear failure when it is not running.
fn local_endpoint() -> String {
    crate::helpers::aws_endpoint()
}

/// A table name no other test (or run) uses.
fn unique_table(purpose: &str) -> String {
    format!("relay-test-{purpose}-{}", uuid::Uuid::new_v4().simple())
}

/// A store on a fresh table of its own on `endpoint`.
async fn fresh_store(endpoint: &str, purpose: &str) -> DynamoStore {
    let store = DynamoStore::connect(&unique_table(purpose), Some(endpoint))
        .await
        .unwrap();
    assert_eq!(store.create_table().await.unwrap(), TableCreated::Created);
    store
}

/// A create sent again after it committed (what the SDK does when an attempt's answer is lost to a
/// timeout) is the same create: it succeeds, is counted once, and is no replay; another message with
/// the same id is still no success.
#[tokio::test]
async fn a_create_retried_after_it_committed_succeeds_once() {
    let store = fresh_store(&local_endpoint(), "retried").await;
    let key = IdempotencyKey::parse("retried-create").unwrap();
    for key in [None, Some(&key)] {
        let message = Message::new(MessageBody::from_stored("sent twice"), None);
        for attempt in ["first", "retry"] {
            let created = store.create_message(&message, key).await;
            assert!(
                matches!(created, Ok(Created::New)),
                "{attempt} (key {key:?}): {created:?}"
            );
        }
        let mut other = message.clone();
        other.body = MessageBody::from_stored("another text");
        // Without a key the id clash is refused; with the key, its first message is replayed.
        match (key, store.create_message(&other, key).await) {
            (None, Err(StoreError::Internal(_))) => {}
            (Some(_), Ok(Created::Replayed(first))) => assert_eq!(first, message),
            (key, outcome) => panic!("another text (key {key:?}): {outcome:?}"),
        }
    }
    assert_eq!(store.count_messages().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_store_conforms() {
    let endpoint = local_endpoint();
    let started = Instant::now();
    conformance::run_all(|| {
        let endpoint = endpoint.clone();
        async move { Arc::new(fresh_store(&endpoint, "conformance").await) as DynStore }
    })
    .await;
    eprintln!(
        "dynamodb conformance: {} cases in {:.1} s",
        conformance::CASES.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn create_table_builds_the_documented_design_and_is_idempotent() {
    let endpoint = local_endpoint();
    let store = fresh_store(&endpoint, "design").await;
    let described = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let table = described.table().unwrap();
    let keys: Vec<_> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (TABLE.partition_key.name, "HASH"),
            (TABLE.sort_key.name, "RANGE")
        ]
    );
    let mut attributes: Vec<_> = table
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name(), a.attribute_type().as_str()))
        .collect();
    attributes.sort_unstable();
    let mut expected: Vec<_> = TABLE
        .attribute_definitions()
        .iter()
        .map(|a| (a.name, a.kind))
        .collect();
    expected.sort_unstable();
    assert_eq!(attributes, expected);
    let index = &table.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), Some(TABLE.indexes[0].name));
    let index_keys: Vec<_> = index
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(index_keys, [EXPIRY_BUCKET, EXPIRES_AT]);
    assert_eq!(
        index
            .projection()
            .and_then(|p| p.projection_type())
            .map(|p| p.as_str()),
        Some(TABLE.indexes[0].projection)
    );
    assert_eq!(
        table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some(TABLE.billing_mode)
    );
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some(TTL_AT));
    assert_eq!(
        ttl.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );

    assert_eq!(
        store.create_table().await.unwrap(),
        TableCreated::AlreadyExisted,
        "a second create-table leaves the table alone"
    );
}

#[tokio::test]
async fn the_create_table_subcommand_creates_the_table_once() {
    let endpoint = local_endpoint();
    let table = unique_table("cli");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--store", &format!("dynamodb:{table}")])
            .args(["--dynamodb-endpoint", &endpoint, "create-table"])
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("Created the DynamoDB table"), "{stdout}");
    let second = run();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("already exists"));

    let not_dynamodb = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--store", "memory:", "create-table"])
        .output()
        .unwrap();
    assert_eq!(not_dynamodb.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_dynamodb.stderr).contains("dynamodb:TABLE"));
}

async fn create_counted(store: &DynamoStore) {
    let message = Message::new(MessageBody::from_stored("counted"), None);
    store.create_message(&message, None).await.unwrap();
}

/// A forwarding proxy between a store and the local server that records every call the store makes:
/// its `X-Amz-Target` operation and its JSON body.
struct RecordingProxy {
    url: String,
    calls: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl RecordingProxy {
    async fn start(upstream: String) -> Self {
        use axum::body::{Body, to_bytes};
        use axum::http::Request;
        let calls: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
        let recorded = calls.clone();
        let client = reqwest::Client::new();
        let forward = move |request: Request<Body>| {
            let (client, upstream, recorded) = (client.clone(), upstream.clone(), recorded.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, usize::MAX).await.unwrap();
                let target = parts.headers["x-amz-target"].to_str().unwrap();
                let op = target.rsplit('.').next().unwrap().to_owned();
                let json = serde_json::from_slice(&body).unwrap();
                recorded.lock().unwrap().push((op, json));
                let mut headers = parts.headers.clone();
                headers.remove("host");
                let answer = client
                    .post(&upstream)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                let answer_headers = answer.headers().clone();
                let mut response =
                    axum::response::Response::new(Body::from(answer.bytes().await.unwrap()));
                *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                for name in ["content-type", "x-amzn-requestid"] {
                    if let Some(value) = answer_headers.get(name) {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                response
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, calls }
    }

    /// The calls recorded since the last `take`.
    fn take(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// `ConsistentRead` of each read call in `calls`, by operation (a `BatchGetItem` per table).
fn read_consistency(calls: &[(String, Value)]) -> Vec<(String, bool)> {
    let consistent = |spec: &Value| spec["ConsistentRead"].as_bool().unwrap_or(false);
    calls
        .iter()
        .flat_map(|(op, body)| match op.as_str() {
            "BatchGetItem" => body["RequestItems"]
                .as_object()
                .unwrap()
                .values()
                .map(|spec| (op.clone(), consistent(spec)))
                .collect(),
            "GetItem" | "Query" => vec![(op.clone(), consistent(body))],
            _ => vec![],
        })
        .collect()
}

/// The count reads its shards eventually consistent (half the read units: 8 for 16 shards); a message,
/// the saved string and the `/app` page (whose count must agree with its timestamps) strongly. Seen on
/// the wire, through a proxy that records every call the store makes.
#[tokio::test]
async fn only_the_message_count_reads_eventually_consistent() {
    let proxy = RecordingProxy::start(local_endpoint()).await;
    let store = fresh_store(&proxy.url, "consistency").await;
    let message = Message::new(MessageBody::from_stored("counted"), None);
    store.create_message(&message, None).await.unwrap();
    store.append_timestamp(now()).await.unwrap();
    proxy.take();

    assert_eq!(store.count_messages().await.unwrap(), 1);
    let count = read_consistency(&proxy.take());
    assert_eq!(
        count,
        vec![("BatchGetItem".to_owned(), false)],
        "GET /messages"
    );

    assert!(
        store
            .get_message(message.id, now())
            .await
            .unwrap()
            .is_some()
    );
    store.get_saved().await.unwrap();
    let page = store
        .list_timestamps(relay::domain::PageLimit::DEFAULT, None)
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    let mut others = read_consistency(&proxy.take());
    others.sort();
    assert_eq!(
        others,
        [
            ("BatchGetItem", true),
            ("GetItem", true),
            ("GetItem", true),
            ("Query", true)
        ]
        .map(|(op, strong)| (op.to_owned(), strong)),
        "get by id, saved string, /app page"
    );
}

/// `relay count-shards` raises the counters' shards while other processes keep the old number: every
/// count stays exact, including one read by a process that never heard of the raise; lowering is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raising_the_count_shards_keeps_every_count_exact() {
    let endpoint = local_endpoint();
    let stale = fresh_store(&endpoint, "shards").await;
    let table = stale.table().to_owned();
    for _ in 0..10 {
        create_counted(&stale).await;
    }
    assert_eq!(stale.count_messages().await.unwrap(), 10);

    let cli = |shards: &str| {
        Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--store", &format!("dynamodb:{table}")])
            .args(["--dynamodb-endpoint", &endpoint, "count-shards", shards])
            .output()
            .unwrap()
    };
    let raised = cli("64");
    assert!(
        raised.status.success(),
        "{}",
        String::from_utf8_lossy(&raised.stderr)
    );
    assert!(String::from_utf8_lossy(&raised.stdout).contains("64 shards"));

    // A process started after the raise spreads its creates over all 64 shards.
    let fresh = DynamoStore::connect(&table, Some(&endpoint)).await.unwrap();
    for _ in 0..120 {
        create_counted(&fresh).await;
    }
    assert_eq!(fresh.known_counter_shards(), 64);
    let mut on_new_shards = 0;
    for shard in 16..64 {
        let key = relay::store::dynamodb::schema::Counter::Messages.shard_key(shard);
        let item = fresh
            .client()
            .get_item()
            .table_name(&table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        on_new_shards += usize::from(item.item().is_some());
    }
    assert!(
        on_new_shards > 0,
        "no create landed on shards 16-63: they would not spread the load"
    );

    // The process that still writes to 16 shards counts every create, learning the 64 from shard 0.
    assert_eq!(stale.known_counter_shards(), 16);
    assert_eq!(stale.count_messages().await.unwrap(), 130);
    assert_eq!(stale.known_counter_shards(), 64);
    assert_eq!(fresh.count_messages().await.unwrap(), 130);

    let lowered = cli("32");
    assert_eq!(lowered.status.code(), Some(2));
    let why = String::from_utf8_lossy(&lowered.stderr);
    assert!(why.contains("already have 64 shards"), "{why}");
    assert_eq!(cli("5000").status.code(), Some(2), "above the maximum");
    assert_eq!(fresh.count_messages().await.unwrap(), 130);
}

#[tokio::test]
async fn the_sweeper_counts_expired_messages_down_exactly_once_across_hours() {
    let endpoint = local_endpoint();
    let store = fresh_store(&endpoint, "sweep").await;
    let message = |ttl: i64| Message::new(MessageBody::from_stored("m"), Ttl::parse(ttl).ok());
    let lasting = Message::new(MessageBody::from_stored("stays"), None);
    let soon = message(5);
    let in_two_hours = message(2 * 3600);
    let in_five_hours = message(5 * 3600);
    for m in [&lasting, &soon, &in_two_hours, &in_five_hours] {
        store.create_message(m, None).await.unwrap();
    }
    // The DynamoDB TTL attribute lies a grace period after the expiry: the sweeper gets there first.
    let raw = store
        .client()
        .get_item()
        .table_name(store.table())
        .set_key(Some(message_key(soon.id)))
        .send()
        .await
        .unwrap();
    let item = raw.item().unwrap();
    let number = |name: &str| item[name].as_n().unwrap().parse::<i64>().unwrap();
    assert_eq!(number(TTL_AT), number(EXPIRES_AT) + TTL_GRACE_SECONDS);
    assert_eq!(
        store.sweep_expired(now(), 100).await.unwrap(),
        0,
        "nothing has expired yet"
    );

    assert_eq!(store.count_messages().await.unwrap(), 4);
    let first = now() + TimeDelta::seconds(10);
    assert_eq!(store.sweep_expired(first, 100).await.unwrap(), 1);
    assert_eq!(store.count_messages().await.unwrap(), 3);
    assert_eq!(store.sweep_expired(first, 100).await.unwrap(), 0);

    // A message deleted by a client before the sweep is not counted down a second time.
    store.delete_message(in_two_hours.id, now()).await.unwrap();
    assert_eq!(store.count_messages().await.unwrap(), 2);
    let later = now() + TimeDelta::hours(6);
    assert_eq!(
        store.sweep_expired(later, 100).await.unwrap(),
        1,
        "messages in later hour buckets are found as their hours come"
    );
    assert_eq!(store.count_messages().await.unwrap(), 1);
    assert_eq!(store.sweep_expired(later, 100).await.unwrap(), 0);
    assert!(
        store
            .get_message(lasting.id, later)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_missing_table_is_unavailable_and_names_the_fix() {
    let endpoint = local_endpoint();
    let store = DynamoStore::connect(&unique_table("missing"), Some(&endpoint))
        .await
        .unwrap();
    let error = store.ping().await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable(m) if m.contains("create-table")),
        "{error:?}"
    );
    let write = store
        .create_message(&Message::new(MessageBody::from_stored("x"), None), None)
        .await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
}

/// Every instance shows the same saved string: it lives in the table, not in a process.
#[tokio::test]
async fn two_relays_on_one_table_show_the_same_saved_string() {
    let endpoint = local_endpoint();
    let table = fresh_store(&endpoint, "saved").await.table().to_owned();
    let token = "0123456789abcdef-admin";
    let spawn = || {
        let (table, endpoint) = (table.clone(), endpoint.clone());
        spawn_with(move |c| {
            c.store = StoreUri::Dynamodb { table };
            c.dynamodb_endpoint = Some(endpoint);
            c.admin_token = Some(token.parse().unwrap());
        })
    };
    let (first, second) = (spawn().await, spawn().await);
    let put = first
        .client
        .put(first.url("/saved"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body("shared by all")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let page = second.get("/saved").await.text().await.unwrap();
    assert!(
        page.contains("<h1>The saved string is shared by all</h1>"),
        "{page}"
    );
}

#[tokio::test]
async fn http_round_trips_on_the_dynamodb_store() {
    let endpoint = local_endpoint();
    let table = fresh_store(&endpoint, "api").await.table().to_owned();
    let app = spawn_with(|c| {
        c.store = StoreUri::Dynamodb { table };
        c.dynamodb_endpoint = Some(endpoint);
        c.admin_token = Some("0123456789abcdef-admin".parse().unwrap());
    })
    .await;

    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["checks"]["store"]["backend"], "dynamodb", "{ready}");
    assert_eq!(ready["checks"]["store"]["status"], "up", "{ready}");

    let created = app.create("hello from dynamodb", Some(600)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/messages/{id}");
    let got = app.get(&path).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["etag"], "\"1\"");
    let got: Value = got.json().await.unwrap();
    assert_eq!(got, created);
    assert_eq!(app.count().await, 1);

    let updated = app
        .client
        .put(app.url(&path))
        .header("if-match", "\"1\"")
        .json(&json!({"message": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()["etag"], "\"2\"");
    let stale = app
        .client
        .put(app.url(&path))
        .header("if-match", "\"1\"")
        .json(&json!({"message": "lost update"}))
        .send()
        .await
        .unwrap();
    assert_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
    )
    .await;

    let first = app
        .client
        .post(app.url("/messages"))
        .header("idempotency-key", "order-7")
        .json(&json!({"message": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retry = app
        .client
        .post(app.url("/messages"))
        .header("idempotency-key", "order-7")
        .json(&json!({"message": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.headers()["idempotency-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(app.count().await, 2);

    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.delete(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
    assert_problem(
        app.get(&path).await,
        StatusCode::NOT_FOUND,
        "message-not-found",
    )
    .await;
    assert_eq!(app.count().await, 1);

    let mut written = Vec::new();
    for _ in 0..3 {
        let response = app.client.post(app.url("/app")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        written.push(response.text().await.unwrap());
    }
    written.reverse();
    let page: Value = app.get("/app?limit=2").await.json().await.unwrap();
    assert_eq!(page["count"], 3);
    assert_eq!(page["timestamps"], json!(written[..2]));
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(&format!("/app?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["timestamps"], json!(written[2..]));
    assert!(rest.get("next_cursor").is_none(), "{rest}");

    let saved = app
        .client
        .put(app.url("/saved"))
        .bearer_auth("0123456789abcdef-admin")
        .header("content-type", "text/plain")
        .body("from <dynamodb>")
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::NO_CONTENT);
    let html = app.get("/saved").await.text().await.unwrap();
    assert!(
        html.contains("The saved string is from &lt;dynamodb&gt;"),
        "{html}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_relay_binary_serves_from_a_dynamodb_table() {
    let endpoint = local_endpoint();
    let table = fresh_store(&endpoint, "binary").await.table().to_owned();
    let store = format!("dynamodb:{table}");
    let relay = spawn_binary(&[
        ("RELAY_STORE", &store),
        ("RELAY_DYNAMODB_ENDPOINT", &endpoint),
    ])
    .await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/messages", relay.base))
        .json(&json!({"message": "via the binary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let count: Value = client
        .get(format!("{}/messages", relay.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["count"], 1);
    relay.stop();
}

// ---- outage ---------------------------------------------------------------------------------------

/// A moto server of this test's own, on a fixed port so a restart comes back at the same address.
struct LocalServer {
    child: Child,
    port: u16,
}

impl LocalServer {
    async fn start(port: u16) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = root.join(".venv-tools/bin/moto_server");
        assert!(
            binary.exists(),
            "{} is missing: run ./scripts/aws-local.sh install",
            binary.display()
        );
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child, port };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = client.get(format!("{}/moto-api/", server.url())).send();
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), probe).await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        self.kill();
    }
}

/// Every response during the outage: a 503 problem with Retry-After, within the request timeout.
/// Creates until one is answered 201, as a client that retries on 503 sees the store heal (each other
/// answer a 503 with Retry-After), failing past `within`; how long it took.
async fn created_within(app: &TestApp, text: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let response = app.post_message(json!({"message": text})).await;
        if response.status() == StatusCode::CREATED {
            return started.elapsed();
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert!(
            started.elapsed() < within,
            "the relay did not recover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn assert_fast_503(request: reqwest::RequestBuilder, budget: Duration, what: &str) -> Value {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let took = started.elapsed();
    eprintln!("outage: {what}: {} in {took:.2?}", response.status());
    assert!(took < budget, "{what}: answered after {took:?}");
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {:?}",
        response.text().await
    );
    assert!(
        response.headers().contains_key("retry-after"),
        "{what}: 503s say when to retry"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:relayops:problem:")),
        "{what}: {body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_gives_503s_and_heals_without_a_restart() {
    // The relay's credentials and region come from the environment the shared server exports.
    local_endpoint();
    let port = free_port();
    let mut server = LocalServer::start(port).await;
    let endpoint = server.url();
    let table = fresh_store(&endpoint, "outage").await.table().to_owned();
    let request_timeout = Duration::from_secs(8);
    let app = spawn_with(|c| {
        c.store = StoreUri::Dynamodb {
            table: table.clone(),
        };
        c.dynamodb_endpoint = Some(endpoint.clone());
        c.request_timeout = request_timeout;
        c.cache_ttl = Duration::ZERO;
    })
    .await;
    let before = app.create("before the outage", None).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // /readyz reuses a store check for up to a second: each readiness question below waits that out.
    let fresh = || tokio::time::sleep(Duration::from_millis(1100));
    fresh().await;
    let budget = request_timeout + Duration::from_secs(1);
    let post = || {
        app.client
            .post(app.url("/messages"))
            .json(&json!({"message": "during"}))
    };

    // Load during each outage: many requests at once, every one a prompt 503.
    let load = |what: &'static str, budget: Duration| {
        let mut load = tokio::task::JoinSet::new();
        let id = before["id"].as_str().unwrap_or_default().to_owned();
        for i in 0..48 {
            let request = match i % 3 {
                0 => post(),
                1 => app.client.get(app.url(&format!("/messages/{id}"))),
                _ => app.client.get(app.url("/messages")),
            };
            load.spawn(async move { assert_fast_503(request, budget, what).await });
        }
        load
    };
    let finish = |mut load: tokio::task::JoinSet<Value>| async move {
        let mut answered = 0;
        while let Some(done) = load.join_next().await {
            done.unwrap_or_else(|e| panic!("a request under load: {e}"));
            answered += 1;
        }
        assert_eq!(answered, 48);
    };

    // 1. The server hangs (accepts connections, never answers): timeouts, not a hang.
    server.signal("-STOP");
    let hung_load = load("under load while hung", budget);
    let (write, count, ready) = tokio::join!(
        assert_fast_503(post(), budget, "create while hung"),
        assert_fast_503(
            app.client.get(app.url("/messages")),
            budget,
            "count while hung"
        ),
        assert_fast_503(
            app.client.get(app.url("/readyz")),
            budget,
            "readyz while hung"
        ),
    );
    assert_eq!(ready["checks"]["store"]["status"], "down", "{ready}");
    finish(hung_load).await;
    for body in [&write, &count] {
        let kind = body["type"].as_str().unwrap();
        assert!(
            kind.ends_with(":unavailable") || kind.ends_with(":timeout"),
            "{body}"
        );
    }
    // The server resumes with a backlog: the attempts abandoned while it hung, which it answers one
    // by one before new ones (503s with Retry-After until then).
    server.signal("-CONT");
    let healed = created_within(&app, "after the hang", Duration::from_secs(15)).await;
    eprintln!("outage: first 201 {healed:.2?} after the hang ended");

    // 2. The server dies: connection refused, answered at once.
    server.kill();
    let budget_down = Duration::from_secs(5);
    finish(load("under load while down", budget_down)).await;
    let write = assert_fast_503(post(), budget_down, "create while down").await;
    assert_eq!(write["type"], "urn:relayops:problem:unavailable", "{write}");
    let id = before["id"].as_str().unwrap();
    let read = app.client.get(app.url(&format!("/messages/{id}")));
    assert_fast_503(read, budget_down, "read while down").await;
    let update = app
        .client
        .put(app.url(&format!("/messages/{id}")))
        .json(&json!({"message": "x"}));
    assert_fast_503(update, budget_down, "update while down").await;
    assert_fast_503(
        app.client.post(app.url("/app")),
        budget_down,
        "log while down",
    )
    .await;
    let ready = assert_fast_503(app.client.get(app.url("/readyz")), budget_down, "readyz").await;
    assert_eq!(ready["checks"]["store"]["status"], "down", "{ready}");

    // 3. It comes back empty: still 503 (the table is missing, and readiness says how to fix it) ...
    let server = LocalServer::start(port).await;
    fresh().await;
    let ready = assert_fast_503(app.client.get(app.url("/readyz")), budget_down, "no table").await;
    assert!(
        ready["checks"]["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("create-table")),
        "{ready}"
    );
    // ... until the table is back: then 2xx again, without restarting the relay.
    let recreated = DynamoStore::connect(&table, Some(&server.url()))
        .await
        .unwrap();
    assert_eq!(
        recreated.create_table().await.unwrap(),
        TableCreated::Created
    );
    let recovered = created_within(&app, "after", Duration::from_secs(15)).await;
    eprintln!("outage: first 201 {recovered:.2?} after the table was recreated");
    fresh().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(
        app.count().await,
        1,
        "the recreated table holds only the new message"
    );
    app.shutdown().await;
}

// ---- the debug buffer in an outage ------------------------------------------------------------------

/// The lines of one request, by `request_id`, with their places in the output.
fn lines_of<'a>(lines: &'a [Value], request_id: &str) -> Vec<(usize, &'a Value)> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["request_id"] == request_id)
        .collect()
}

fn is_request_line(line: &Value) -> bool {
    line["message"] == "Request finished." || line["message"] == "Request failed."
}

/// What the debug buffer wrote for the request whose line is at `at`: the DEBUG and WARN lines of the
/// same request, which must sit in one block right before its request line.
fn flushed_before(lines: &[Value], at: usize) -> Vec<&Value> {
    let id = lines[at]["request_id"].as_str().unwrap();
    let buffered: Vec<(usize, &Value)> = lines_of(lines, id)
        .into_iter()
        .filter(|(_, l)| l["level"] == "DEBUG" || l["level"] == "WARN")
        .collect();
    let places: Vec<usize> = buffered.iter().map(|(i, _)| *i).collect();
    let block: Vec<usize> = (at - places.len()..at).collect();
    assert_eq!(
        places, block,
        "request {id}: its buffered lines sit in one block right before its request line"
    );
    buffered.into_iter().map(|(_, l)| l).collect()
}

/// With `RUST_LOG=info` and the buffer on (`RELAY_LOG_BUFFER=debug`): requests that succeed write no
/// debug line; a slow one (the server stopped for 1.5 s) writes its buffer; once the server is dead,
/// each of 64 concurrent 503s writes its own DynamoDB call attempts (`op`, `latency_ms`, `error`)
/// right before its request line; and a relay with a 1 KiB buffer says once per request how many
/// lines it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_an_outage_each_503_writes_its_own_store_calls_before_its_request_line() {
    local_endpoint();
    let port = free_port();
    let mut server = LocalServer::start(port).await;
    let endpoint = server.url();
    let table = fresh_store(&endpoint, "buffer").await.table().to_owned();
    let store = format!("dynamodb:{table}");
    let envs = |max_bytes: &'static str| {
        vec![
            ("RELAY_STORE", store.clone()),
            ("RELAY_DYNAMODB_ENDPOINT", endpoint.clone()),
            ("RUST_LOG", "info".to_owned()),
            ("RELAY_LOG_BUFFER", "debug".to_owned()),
            ("RELAY_LOG_BUFFER_MAX_BYTES", max_bytes.to_owned()),
            ("RELAY_CACHE_TTL", "0s".to_owned()),
        ]
    };
    let (roomy, tiny) = (envs("65536"), envs("1024"));
    let roomy: Vec<(&str, &str)> = roomy.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tiny: Vec<(&str, &str)> = tiny.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let relay = spawn_binary(&roomy).await;
    let small = spawn_binary(&tiny).await;
    let client = reqwest::Client::new();
    let url = relay.create(&client, "before the outage").await;
    for _ in 0..20 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Slow: the server stops answering for 1.5 s while a read waits on it (an attempt may take 2 s).
    server.signal("-STOP");
    let slow = tokio::spawn(client.get(&url).send());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("-CONT");
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);

    // Dead: 64 requests at once, every one a 503; then a few on the relay with the small buffer.
    server.kill();
    let mut load = tokio::task::JoinSet::new();
    for i in 0..64 {
        let request = match i % 3 {
            0 => client
                .post(format!("{}/messages", relay.base))
                .json(&json!({"message": "during"})),
            1 => client.get(&url),
            _ => client.get(format!("{}/messages", relay.base)),
        };
        load.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    while let Some(status) = load.join_next().await {
        assert_eq!(status.unwrap().unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    for _ in 0..3 {
        let response = client
            .get(format!("{}/messages", small.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    let stdout = relay.stop();
    let lines = parse_lines(&stdout);
    let request_lines: Vec<usize> = (0..lines.len())
        .filter(|&i| is_request_line(&lines[i]))
        .collect();
    let (mut failed, mut slow, mut quiet) = (0, 0, 0);
    for &at in &request_lines {
        let line = &lines[at];
        let flushed = flushed_before(&lines, at);
        let latency_ms = line["latency_ms"].as_f64().unwrap();
        if line["status"] == 503 {
            failed += 1;
            assert_eq!(line["flush_buffer"], true, "{line}");
            let attempts: Vec<&&Value> = flushed
                .iter()
                .filter(|l| l["message"] == "DynamoDB call attempt failed.")
                .collect();
            assert!(!attempts.is_empty(), "a 503 shows its store calls: {line}");
            for attempt in attempts {
                assert_eq!(attempt["level"], "DEBUG");
                assert!(attempt["op"].is_string(), "{attempt}");
                assert!(attempt["latency_ms"].is_number(), "{attempt}");
                assert!(
                    attempt["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{attempt}"
                );
                assert!(attempt["call"].is_string(), "{attempt}");
            }
        } else if latency_ms > 1000.0 {
            slow += 1;
            assert_eq!(line["flush_buffer"], true, "{line}");
            assert!(
                flushed
                    .iter()
                    .any(|l| l["message"] == "DynamoDB call attempt finished."
                        && l["latency_ms"].as_f64().is_some_and(|ms| ms > 1000.0)),
                "the slow request shows the slow call: {flushed:?}"
            );
        } else {
            quiet += 1;
            assert!(
                flushed.is_empty() && line.get("flush_buffer").is_none(),
                "{line}: {flushed:?}"
            );
        }
    }
    assert_eq!(failed, 64, "{stdout}");
    assert_eq!(slow, 1, "{stdout}");
    assert!(quiet >= 21, "{quiet} quick requests");
    assert!(
        lines
            .iter()
            .all(|l| l["level"] != "DEBUG" || l["request_id"].is_string()),
        "no debug line outside a request"
    );

    let stdout = small.stop();
    let lines = parse_lines(&stdout);
    let mut overflowed = 0;
    for at in (0..lines.len()).filter(|&i| is_request_line(&lines[i]) && lines[i]["status"] == 503)
    {
        let flushed = flushed_before(&lines, at);
        let warns: Vec<&&Value> = flushed.iter().filter(|l| l["level"] == "WARN").collect();
        if let [warn] = warns[..] {
            overflowed += 1;
            assert!(
                std::ptr::eq(*warn, flushed[0]),
                "the WARN comes first: {flushed:?}"
            );
            assert!(
                warn["dropped_lines"].as_u64().is_some_and(|n| n >= 1),
                "{warn}"
            );
            // The kept lines, after the WARN: at most the buffer's 1 KiB.
            let kept: usize = stdout
                .lines()
                .skip(at + 1 - flushed.len())
                .take(flushed.len() - 1)
                .map(|l| l.len() + 1)
                .sum();
            assert!(kept <= 1024, "{kept} bytes kept");
        } else {
            assert!(
                warns.is_empty(),
                "at most one WARN per request: {flushed:?}"
            );
        }
    }
    assert_eq!(
        overflowed, 3,
        "every request overflowed its 1 KiB: {stdout}"
    );
}
