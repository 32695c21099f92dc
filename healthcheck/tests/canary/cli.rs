//! The `healthcheck` binary as CI runs it: exit codes, the terminal view, the report files, settings
//! from `HEALTHCHECK_*` variables, and the metric catalog. The binary must never inherit `HEALTHCHECK_*`
//! settings from the environment the tests run in.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use axum::routing::get;
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{slow, spawn_fake, spawn_relay, spawn_relay_with, temp_sqlite, typed};

/// The binary with no `HEALTHCHECK_*` settings inherited from the environment.
fn healthcheck() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_healthcheck"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HEALTHCHECK_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").arg("--color").arg("never");
    command
}

async fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the canary finishes within a minute")
        .expect("the binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exits_zero_and_writes_every_report_when_all_probes_pass() {
    let relay = spawn_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let (json, md, junit) = (
        dir.path().join("out/report.json"),
        dir.path().join("out/report.md"),
        dir.path().join("junit.xml"),
    );
    let (code, stdout, stderr) = run(healthcheck()
        .args(["--target", &relay.url(""), "--stage", "ci"])
        .arg("--report-json")
        .arg(&json)
        .arg("--report-md")
        .arg(&md)
        .arg("--junit")
        .arg(&junit))
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with(&format!("healthcheck · stage ci · {}", relay.url(""))),
        "{stdout}"
    );
    assert!(stdout.contains("✓ 5 of 5 probes passed"), "{stdout}");
    assert!(
        stdout.contains(&format!("JSON report: {}", json.display())),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&read(&json)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["stage"], "ci");
    assert_eq!(report["probes"].as_array().unwrap().len(), 5);

    let markdown = read(&md);
    assert!(
        markdown.starts_with("## ✅ Canary `ci`: 5 of 5 probes passed"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| ✅ | api-roundtrip | 204 |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("```text\nwebsite "),
        "the latency chart: {markdown}"
    );

    let xml = read(&junit);
    assert!(
        xml.contains(r#"<testsuites name="healthcheck" tests="5" failures="0""#),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exits_non_zero_and_still_reports_when_the_relay_is_down() {
    let relay = spawn_relay().await;
    let url = relay.url("");
    relay.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("report.json"), dir.path().join("junit.xml"));

    let (code, stdout, _) = run(healthcheck()
        .args(["--target", &url])
        .arg("--report-json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit))
    .await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("✗ readyz"), "{stdout}");
    assert!(stdout.contains("Connection refused"), "{stdout}");
    assert!(stdout.contains("✗ 5 of 5 probes failed"), "{stdout}");
    let report: Value = serde_json::from_str(&read(&json)).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["failed"], 5);
    assert_eq!(report["probes"][0]["failure"], "connect");
    assert!(read(&junit).contains(r#"<failure type="connect" message="GET /: cannot connect to"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_takes_its_settings_from_healthcheck_variables_and_fails_a_slow_probe() {
    let (addr, _) = spawn_fake(vec![(
        "/readyz",
        slow(
            Duration::from_millis(200),
            "application/json",
            r#"{"status":"ready"}"#,
        ),
    )])
    .await;
    let (code, stdout, _) = run(healthcheck()
        .env("HEALTHCHECK_TARGET", format!("http://{addr}"))
        .env("HEALTHCHECK_STAGE", "from-env")
        .env("HEALTHCHECK_PROBES", "readyz,saved")
        .env("HEALTHCHECK_BUDGET_READYZ", "50ms"))
    .await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with("healthcheck · stage from-env"),
        "{stdout}"
    );
    assert!(stdout.contains("✗ readyz  200"), "{stdout}");
    assert!(stdout.contains("over_budget"), "{stdout}");
    assert!(stdout.contains("over its 50 ms budget"), "{stdout}");
    assert!(stdout.contains("✓ saved"), "{stdout}");
    assert!(stdout.contains("✗ 1 of 2 probes failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exits_non_zero_when_readyz_is_red() {
    let (_dir, uri) = temp_sqlite();
    let relay = spawn_relay_with(|c| c.store = uri).await;
    relay.store.close().await;
    let (code, stdout, _) =
        run(healthcheck().args(["--target", &relay.url(""), "--probes", "readyz"])).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("✗ readyz  503"), "{stdout}");
    assert!(
        stdout.contains(
            "GET /readyz answered 503 Service Unavailable, expected 200 OK: the store is down"
        ),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exits_non_zero_on_wrong_content() {
    let (addr, _) = spawn_fake(vec![(
        "/app",
        get(|| async { typed("text/html", "<html>maintenance</html>") }),
    )])
    .await;
    let (code, stdout, _) = run(healthcheck().args(["--target", &format!("http://{addr}")])).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("GET /app?limit=1 has content-type text/html, expected application/json"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_exit_two_with_a_clear_message() {
    let (code, _, stderr) =
        run(healthcheck().args(["--target", "http://127.0.0.1:1", "--stage", "has space"])).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--stage (HEALTHCHECK_STAGE) `has space` must be"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&mut healthcheck()).await;
    assert_eq!(code, 2, "clap's usage error");
    assert!(stderr.contains("--target"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metric_catalog_prints_as_json_without_a_target() {
    let (code, stdout, _) = run(healthcheck().args(["metrics-catalog", "--format", "json"])).await;
    assert_eq!(code, 0);
    let catalog: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(catalog["namespace"], "Relay/Canary");
    let metrics: Vec<(&str, &str)> = catalog["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        metrics,
        [
            ("Success", "Count"),
            ("Duration", "Milliseconds"),
            ("RunSuccess", "Count")
        ]
    );

    let (code, stdout, _) =
        run(healthcheck().args(["metrics-catalog", "--format", "markdown"])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("| `Duration` | Milliseconds | Stage, Probe |"),
        "{stdout}"
    );
}
