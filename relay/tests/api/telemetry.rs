//! Logs and metrics as an operator sees them: the exact shape of the JSON log lines of the real binary,
//! no secrets at info, every catalog metric exposed, no high-cardinality labels, and the README's metric
//! list generated from the catalog.

use std::collections::BTreeSet;
use std::time::Duration;

use relay::telemetry::names::{Kind, Metric, catalog, catalog_markdown};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{parse_lines, spawn_binary, spawn_with};

const TOKEN: &str = "log-test-admin-token-5f1e2d";

/// Whatever layer is added to the subscriber sees each request's line as a tracing event inside the
/// request span, with the span's fields: nothing is written behind tracing's back.
#[test]
fn request_lines_are_tracing_events_that_any_layer_sees() {
    use std::sync::{Arc, Mutex};

    use tower::ServiceExt;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Default)]
    struct Message(String);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.0 = value.to_owned();
            }
        }
    }
    /// Each event's message and the names of the spans it is in.
    type Seen = Vec<(String, Vec<String>)>;
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Seen>>);
    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            let mut message = Message::default();
            event.record(&mut message);
            let spans = ctx
                .event_scope(event)
                .map(|scope| scope.map(|span| span.name().to_owned()).collect())
                .unwrap_or_default();
            self.0.lock().unwrap().push((message.0, spans));
        }
    }

    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let config = relay::config::Config::for_tests();
            let store = relay::startup::open_store(&config).await.unwrap();
            let app = relay::startup::build(&config, store, relay::telemetry::Runtime::Server);
            let request =
                axum::http::Request::get("/messages/01a213d9-0e0c-7109-b209-559fdee526d4")
                    .body(axum::body::Body::empty())
                    .unwrap();
            let response = app.router.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND.as_u16());
        });
    });
    let seen = capture.0.lock().unwrap().clone();
    let line = seen
        .iter()
        .find(|(message, _)| message == "Request finished.")
        .unwrap_or_else(|| panic!("no request line among {seen:?}"));
    assert_eq!(line.1, ["request"], "inside the request span: {seen:?}");
}

#[tokio::test]
async fn json_log_lines_carry_the_documented_fields() {
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RUST_LOG", "debug"),
        ("RELAY_ENV", "ci"),
    ])
    .await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/messages", relay.base))
        .header("x-request-id", "shape-test-1")
        .json(&json!({"message": "shape"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    client
        .get(format!("{}/messages/{id}", relay.base))
        .header("x-request-id", "shape-test-2")
        .send()
        .await
        .unwrap();
    let lines = parse_lines(&relay.stop());

    for line in &lines {
        for field in [
            "timestamp",
            "level",
            "target",
            "service",
            "version",
            "env",
            "message",
        ] {
            assert!(
                line.get(field).is_some(),
                "every line has `{field}`: {line}"
            );
        }
        assert_eq!(line["service"], "relay");
        assert_eq!(line["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(line["env"], "ci");
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
        assert!(
            line.get("span").is_none() && line.get("fields").is_none(),
            "flat, not nested: {line}"
        );
    }
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "Request finished." && l["request_id"] == "shape-test-1")
        .collect();
    assert_eq!(finished.len(), 1, "one request line per request");
    let line = finished[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/messages");
    assert_eq!(line["status"], 201);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(
        line.get("cold_start").is_none(),
        "cold_start only in Lambda"
    );

    let read = lines
        .iter()
        .find(|l| l["message"] == "Request finished." && l["request_id"] == "shape-test-2")
        .unwrap();
    assert_eq!(
        read["route"], "/messages/{id}",
        "the route template, never the raw path"
    );

    let store_line = lines
        .iter()
        .find(|l| l["message"] == "Store operation finished." && l["request_id"] == "shape-test-1")
        .expect("store calls log at debug inside the request");
    assert_eq!(store_line["level"], "DEBUG");
    assert_eq!(store_line["op"], "create_message");
    assert_eq!(store_line["backend"], "memory");
    assert_eq!(store_line["outcome"], "ok");
    assert!(store_line["latency_ms"].is_number());
}

/// One request of each kind the request-field tests need: a read that ends in a problem (404) and an
/// admin write refused at warn level (401). Returns the relay's stdout.
async fn problem_and_warning_requests(envs: &[(&str, &str)]) -> String {
    let mut envs = envs.to_vec();
    envs.extend([("RELAY_STORE", "memory:"), ("RELAY_ADMIN_TOKEN", TOKEN)]);
    let relay = spawn_binary(&envs).await;
    let client = reqwest::Client::new();
    let missing = client
        .get(format!(
            "{}/messages/01a213d9-0e0c-7109-b209-559fdee526d4",
            relay.base
        ))
        .header("x-request-id", "fields-missing")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let refused = client
        .put(format!("{}/saved", relay.base))
        .header("x-request-id", "fields-refused")
        .bearer_auth("not-the-token")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    relay.stop()
}

/// The lines of `stdout` logged for request `id`, each checked to name the request's fields once.
fn lines_of_request(stdout: &str, id: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|raw| raw.contains(&format!("\"request_id\":\"{id}\"")))
        .map(|raw| {
            for key in ["request_id", "method", "route"] {
                assert_eq!(
                    raw.matches(&format!("\"{key}\":")).count(),
                    1,
                    "`{key}` exactly once: {raw}"
                );
            }
            serde_json::from_str(raw).unwrap()
        })
        .collect()
}

/// The line with `message` among `lines` (all of `stdout` shown if there is none).
fn line_with<'a>(lines: &'a [Value], message: &str, stdout: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no line `{message}` in: {stdout}"))
}

#[tokio::test]
async fn every_line_of_a_request_carries_its_fields_and_its_problem_at_any_level() {
    // The default way: fields from the request slot, whatever the level.
    for level in ["info", "warn"] {
        let stdout = problem_and_warning_requests(&[("RUST_LOG", level)]).await;
        let refused = lines_of_request(&stdout, "fields-refused");
        let warning = line_with(&refused, "Admin authentication failed.", &stdout);
        assert_eq!(warning["level"], "WARN");
        assert_eq!(warning["method"], "PUT");
        assert_eq!(warning["route"], "/saved");
        if level == "info" {
            let missing = lines_of_request(&stdout, "fields-missing");
            let finished = line_with(&missing, "Request finished.", &stdout);
            assert_eq!(finished["route"], "/messages/{id}");
            assert_eq!(finished["status"], 404);
            assert_eq!(finished["problem"], "message-not-found");
            let finished = line_with(&refused, "Request finished.", &stdout);
            assert_eq!(finished["problem"], "unauthorized");
        } else {
            assert!(
                !stdout.contains("Request finished."),
                "request lines are info: {stdout}"
            );
        }
    }
}

#[tokio::test]
async fn span_directives_select_request_lines_by_their_span() {
    // A span directive: debug lines only inside requests, which are then carried by a tracing span.
    let stdout = problem_and_warning_requests(&[("RUST_LOG", "warn,relay[request]=debug")]).await;
    let missing = lines_of_request(&stdout, "fields-missing");
    let store = line_with(&missing, "Store operation finished.", &stdout);
    assert_eq!(store["level"], "DEBUG");
    assert_eq!(store["route"], "/messages/{id}");
    let finished = line_with(&missing, "Request finished.", &stdout);
    assert_eq!(finished["problem"], "message-not-found");
    assert!(
        !stdout.contains("Relay started."),
        "info outside requests stays filtered out: {stdout}"
    );
    // A directive the request span does not meet (it is info): the fields still reach warnings.
    let stdout =
        problem_and_warning_requests(&[("RUST_LOG", "warn,relay[no_such_span]=debug")]).await;
    let refused = lines_of_request(&stdout, "fields-refused");
    line_with(&refused, "Admin authentication failed.", &stdout);
}

/// `--debug-sample-rate`: a sampled request logs the relay's debug lines at `RUST_LOG=info`, and every
/// line of it says `sampled: true`; the choice is made once per request; over 20,000 requests at 0.01
/// the sampled count lands within the 99.9% binomial bound, and unsampled requests log no debug line.
#[tokio::test]
async fn debug_sampling_logs_whole_requests_at_debug_within_the_binomial_bound() {
    const REQUESTS: usize = 20_000;
    const RATE: f64 = 0.01;
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RUST_LOG", "info"),
        ("RELAY_DEBUG_SAMPLE_RATE", "0.01"),
        // Every read goes to the store, which logs the operation at debug.
        ("RELAY_CACHE_TTL", "0s"),
    ])
    .await;
    let client = reqwest::Client::new();
    let url = relay.create(&client, "sampled").await;
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..REQUESTS / 16 {
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let stdout = relay.stop();
    let lines = parse_lines(&stdout);
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "Request finished.")
        .collect();
    assert!(
        finished
            .iter()
            .all(|l| l.get("sampled").is_none() || l["sampled"] == true),
        "unsampled lines carry no `sampled` member"
    );
    // Every sampled request, the create before the reads included (it is sampled one time in 100).
    let sampled_ids: BTreeSet<&str> = finished
        .iter()
        .filter(|l| l["sampled"] == true)
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    let reads: Vec<&Value> = finished
        .iter()
        .copied()
        .filter(|l| l["route"] == "/messages/{id}")
        .collect();
    assert_eq!(reads.len(), REQUESTS, "one request line per read");
    let sampled: Vec<&str> = reads
        .iter()
        .filter(|l| l["sampled"] == true)
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    // Binomial(20,000, 0.01): mean 200, standard deviation 14.07; 99.9% two-sided is 3.29 of them.
    let (mean, sd) = (
        REQUESTS as f64 * RATE,
        (REQUESTS as f64 * RATE * (1.0 - RATE)).sqrt(),
    );
    let (low, high) = (mean - 3.29 * sd, mean + 3.29 * sd);
    let count = sampled.len() as f64;
    assert!(
        (low..=high).contains(&count),
        "{count} sampled of {REQUESTS}, outside [{low:.0}, {high:.0}]"
    );
    let debug: Vec<&Value> = lines.iter().filter(|l| l["level"] == "DEBUG").collect();
    for line in &debug {
        let id = line["request_id"].as_str().unwrap_or_default();
        assert!(
            sampled_ids.contains(id) && line["sampled"] == true,
            "a debug line outside a sampled request: {line}"
        );
    }
    for id in &sampled {
        assert!(
            debug
                .iter()
                .any(|l| l["request_id"] == *id && l["message"] == "Store operation finished."),
            "sampled request {id} logged no debug line"
        );
    }
}

#[test]
fn a_debug_sample_rate_outside_0_to_1_is_refused_at_start() {
    for rate in ["1.5", "-0.1", "NaN", "often"] {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--store", "memory:", "--listen", "127.0.0.1:0"])
            .env("RELAY_DEBUG_SAMPLE_RATE", rate)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{rate} was accepted");
        assert!(
            said.contains("debug-sample-rate")
                && (said.contains("not between 0.0 and 1.0") || said.contains("not a number")),
            "{rate}: {said}"
        );
    }
}

#[tokio::test]
async fn pretty_lines_show_the_request_fields() {
    let stdout =
        problem_and_warning_requests(&[("RUST_LOG", "info"), ("RELAY_LOG_FORMAT", "pretty")]).await;
    // Without colours: the pretty format styles with ANSI escapes.
    let mut plain = String::new();
    let mut escape = false;
    for c in stdout.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (false, c) => plain.push(c),
            (true, _) => {}
        }
    }
    assert!(plain.contains("Request finished."), "{plain}");
    // Each request's span fields on one line (the pretty format lists recorded ones last).
    for (id, fields) in [
        (
            "fields-missing",
            &[
                "method: \"GET\"",
                "route: \"/messages/{id}\"",
                "problem: \"message-not-found\"",
                "trace_id: ",
                "span_id: ",
            ][..],
        ),
        (
            "fields-refused",
            &["method: \"PUT\"", "route: \"/saved\"", "trace_id: "][..],
        ),
    ] {
        let needle = format!("request_id: \"{id}\"");
        let line = plain
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("`{needle}` in: {plain}"));
        for field in fields {
            assert!(line.contains(field), "`{field}` in: {line}");
        }
    }
}

#[tokio::test]
async fn message_contents_and_tokens_never_reach_info_logs() {
    let relay = spawn_binary(&[
        ("RELAY_STORE", "memory:"),
        ("RUST_LOG", "info"),
        ("RELAY_ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let client = reqwest::Client::new();
    let secret = "TOP-SECRET-MESSAGE-BODY-4d2c";
    let path = relay.create(&client, secret).await;
    client.get(&path).send().await.unwrap();
    client
        .put(&path)
        .json(&json!({"message": format!("{secret}-v2")}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/paste", relay.base))
        .json(&json!({"content": format!("{secret}-paste")}))
        .send()
        .await
        .unwrap();
    let saved = "SECRET-SAVED-VALUE-77aa";
    let ok = client
        .put(format!("{}/saved", relay.base))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(saved)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let wrong = "WRONG-TOKEN-GUESS-123456";
    let refused = client
        .put(format!("{}/saved", relay.base))
        .bearer_auth(wrong)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let stdout = relay.stop();

    assert!(
        stdout.contains("Saved string updated."),
        "the events did log: {stdout}"
    );
    assert!(stdout.contains("Admin authentication failed."), "{stdout}");
    for needle in [secret, saved, TOKEN, wrong] {
        assert!(
            !stdout.contains(needle),
            "`{needle}` leaked into the info logs"
        );
    }
}

#[tokio::test]
async fn every_catalog_metric_is_exposed_after_exercising_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(|c| {
        c.store = relay::config::StoreUri::Sqlite(dir.path().join("relay.db"));
        c.rate_limit = 5;
        c.rate_limit_burst = Some(40);
        c.sweep_interval = Duration::from_millis(200);
        c.admin_token = Some(TOKEN.parse().unwrap());
    })
    .await;
    let m = app.create("metrics", None).await;
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    app.get(&path).await; // cache hit (the create primed it)
    app.get(&format!("/messages/{}", uuid::Uuid::new_v4()))
        .await; // cache miss
    app.put_json(&path, json!({"message": "v2"})).await;
    let send = || {
        app.client
            .post(app.url("/messages"))
            .header("idempotency-key", "metrics-key")
            .json(&json!({"message": "once"}))
            .send()
    };
    send().await.unwrap();
    send().await.unwrap(); // idempotent replay
    app.create("short", Some(1)).await;
    app.client.post(app.url("/app")).send().await.unwrap();
    app.client
        .put(app.url("/saved"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    app.client
        .put(app.url("/saved"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap(); // auth failure
    app.delete(&path).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the short message expires and is swept
    app.store.close().await;
    let refused = app.post_message(json!({"message": "after close"})).await; // a store error
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..60 {
        app.get("/messages").await; // until rate limited
    }
    let text = app.get("/metrics").await.text().await.unwrap();

    let exposed: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for spec in catalog() {
        let present = match spec.kind {
            Kind::Histogram => exposed.contains(format!("{}_bucket", spec.name).as_str()),
            _ => exposed.contains(spec.name),
        };
        assert!(
            present,
            "{} is in the catalog but not in /metrics:\n{text}",
            spec.name
        );
    }
    for name in &exposed {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            Metric::ALL
                .iter()
                .any(|m| m.as_str() == base || m.as_str() == *name),
            "{name} is exposed but not in the catalog"
        );
    }
    assert!(text.contains(r#"relay_store_errors_total{backend="sqlite",op="create_message",error_code="unavailable"}"#), "{text}");
    let expired: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("relay_messages_expired_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expired >= 1.0,
        "the sweeper counted the expired message: {expired}"
    );
}

#[tokio::test]
async fn label_values_stay_within_bounded_sets() {
    let app = spawn_app_with_traffic().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut routes: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    routes.extend(
        [
            "unmatched",
            "/openapi.json",
            "/assets/app.js",
            "/assets/app.css",
            "/favicon.svg",
        ]
        .map(String::from),
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for (label, allowed) in [
            (
                "route",
                routes.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            (
                "method",
                vec![
                    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "OTHER",
                ],
            ),
            ("status_class", vec!["1xx", "2xx", "3xx", "4xx", "5xx"]),
        ] {
            if let Some(rest) = line.split(&format!("{label}=\"")).nth(1) {
                let value = rest.split('"').next().unwrap();
                assert!(
                    allowed.contains(&value),
                    "{label}={value} is not from its bounded set: {line}"
                );
            }
        }
    }
}

async fn spawn_app_with_traffic() -> crate::helpers::TestApp {
    let app = crate::helpers::spawn_app().await;
    let m = app.create("x", None).await;
    for path in [
        format!("/messages/{}", m["id"].as_str().unwrap()),
        format!("/messages/{}", uuid::Uuid::new_v4()),
        "/messages/../../etc/passwd".into(),
        "/random/path/123".into(),
        "/paste/abc".into(),
        "/%FF%FE".into(),
    ] {
        app.get(&path).await;
    }
    app.client
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            app.url("/messages"),
        )
        .send()
        .await
        .unwrap();
    app
}

#[test]
fn the_readme_metric_list_is_the_catalog() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = "<!-- metrics-catalog:start (generated: cargo run -p relay -- metrics-catalog --format markdown) -->\n";
    let end = "<!-- metrics-catalog:end -->";
    let from = readme
        .find(start)
        .expect("the README has the catalog markers")
        + start.len();
    let to = readme[from..].find(end).expect("end marker") + from;
    assert_eq!(
        &readme[from..to],
        catalog_markdown(),
        "regenerate the README's metric list from the catalog"
    );
}

#[test]
fn the_cli_prints_the_catalog_as_json() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["metrics-catalog", "--format", "json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed.len(), Metric::ALL.len());
    assert_eq!(printed[0]["name"], "relay_http_requests_total");
    assert_eq!(printed[0]["kind"], "counter");
    assert_eq!(
        printed[0]["labels"],
        json!(["route", "method", "status_class"])
    );
}

#[test]
fn the_grafana_dashboard_uses_only_catalog_metrics_and_their_labels() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/relay-grafana.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    // The SLO panels read the recording rules generated from slos/relay.yaml.
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../alarms/prometheus/slo-rules.yaml"
    ))
    .unwrap();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let recorded: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("slo:"))
            .collect();
        for name in &recorded {
            assert!(
                rules.contains(&format!("record: {name}\n")),
                "{name} in `{expr}` is not a recording rule of alarms/prometheus/slo-rules.yaml"
            );
        }
        let metric_names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("relay_"))
            .collect();
        assert!(
            !metric_names.is_empty() || !recorded.is_empty(),
            "every query reads a relay metric or an SLO recording rule: {expr}"
        );
        for name in metric_names {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            let metric = Metric::ALL
                .iter()
                .find(|m| m.as_str() == base)
                .unwrap_or_else(|| panic!("{name} in `{expr}` is not in the catalog"));
            used.insert(metric.as_str());
            // Every label the query groups by must exist on every metric it reads (or be Prometheus's own).
            if let Some(rest) = expr.split("by (").nth(1) {
                for label in rest.split(')').next().unwrap().split(',').map(str::trim) {
                    let known = metric.spec().labels.contains(&label)
                        || ["le", "instance", "job", "version"].contains(&label);
                    assert!(
                        known,
                        "`by ({label})` in `{expr}`: {} has no such label",
                        metric.as_str()
                    );
                }
            }
        }
    }
    for metric in Metric::ALL {
        assert!(
            used.contains(metric.as_str()),
            "{} is on no panel",
            metric.as_str()
        );
    }
}

/// W3C trace context: a valid `traceparent` puts the request in the caller's trace (its `trace_id`, a
/// `span_id` of the request's own); a malformed one (each way the specification forbids) never fails
/// the request and starts a new trace; an X-Ray root (`X-Amzn-Trace-Id`) is kept as `xray_trace_id`
/// and, without a `traceparent`, is the trace. Every line of a request carries its ids.
#[tokio::test]
async fn trace_context_is_read_from_traceparent_and_a_malformed_one_never_fails_a_request() {
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const XRAY: &str = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1";
    let malformed = [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "",
        "garbage",
    ];
    let relay = spawn_binary(&[("RELAY_STORE", "memory:"), ("RUST_LOG", "info,relay=debug")]).await;
    let client = reqwest::Client::new();
    let send = |id: String, headers: Vec<(&'static str, String)>| {
        let mut request = client
            .post(format!("{}/messages", relay.base))
            .header("x-request-id", id)
            .json(&json!({"message": "traced"}));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    for (i, header) in malformed.iter().enumerate() {
        let response = send(
            format!("bad-{i}"),
            vec![("traceparent", (*header).to_owned())],
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{header:?}");
    }
    for (id, headers) in [
        ("valid", vec![("traceparent", VALID.to_owned())]),
        ("xray", vec![("x-amzn-trace-id", XRAY.to_owned())]),
        (
            "both",
            vec![
                ("traceparent", VALID.to_owned()),
                ("tracestate", "vendor=opaque,other=1".to_owned()),
                ("x-amzn-trace-id", XRAY.to_owned()),
            ],
        ),
        ("none", vec![]),
    ] {
        let response = send(id.to_owned(), headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{id}");
    }
    let lines = parse_lines(&relay.stop());
    let request_line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id && l["message"] == "Request finished.")
            .unwrap_or_else(|| panic!("no request line for {id}"))
    };
    let is_hex = |v: &Value, digits: usize| {
        v.as_str().is_some_and(|s| {
            s.len() == digits
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && s.bytes().any(|b| b != b'0')
        })
    };
    let mut traces = BTreeSet::new();
    for (id, line) in lines
        .iter()
        .filter(|l| l["request_id"].is_string())
        .map(|l| (l["request_id"].as_str().unwrap(), l))
    {
        let closing = request_line(id);
        assert_eq!(
            line["trace_id"], closing["trace_id"],
            "every line of {id} has its trace: {line}"
        );
        assert_eq!(line["span_id"], closing["span_id"], "{line}");
    }
    for i in 0..malformed.len() {
        let line = request_line(&format!("bad-{i}"));
        assert!(
            is_hex(&line["trace_id"], 32) && is_hex(&line["span_id"], 16),
            "{line}"
        );
        assert_ne!(
            line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "a new trace: {line}"
        );
        assert!(
            traces.insert(line["trace_id"].as_str().unwrap().to_owned()),
            "a trace of its own: {line}"
        );
        assert!(line.get("xray_trace_id").is_none());
    }
    let valid = request_line("valid");
    assert_eq!(valid["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        is_hex(&valid["span_id"], 16) && valid["span_id"] != "00f067aa0ba902b7",
        "{valid}"
    );
    let xray = request_line("xray");
    assert_eq!(
        xray["trace_id"], "67891233abcdef012345678912345678",
        "the X-Ray root is the trace"
    );
    assert_eq!(xray["xray_trace_id"], "1-67891233-abcdef012345678912345678");
    let both = request_line("both");
    assert_eq!(
        both["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "traceparent wins"
    );
    assert_eq!(both["xray_trace_id"], "1-67891233-abcdef012345678912345678");
    let none = request_line("none");
    assert!(
        is_hex(&none["trace_id"], 32)
            && traces.insert(none["trace_id"].as_str().unwrap().to_owned())
    );
}

/// A relay's `/metrics` holds the store series of the backend it serves from, at 0 before anything
/// happened, and none of the other backends' (a process that serves from SQLite shows no memory or
/// DynamoDB series to confuse a dashboard).
#[tokio::test]
async fn metrics_hold_only_the_served_backends_store_series() {
    let relay = spawn_binary(&[("RELAY_STORE", "memory:")]).await;
    let text = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    relay.kill();
    assert!(
        text.contains(
            r#"relay_store_errors_total{backend="memory",op="create_message",error_code="unavailable"} 0"#
        ),
        "{text}"
    );
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#"backend="sqlite""#) || l.contains(r#"backend="dynamodb""#))
        .collect();
    assert!(other.is_empty(), "{other:?}");
}
