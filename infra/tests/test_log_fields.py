"""Every field a Logs Insights query reads (dashboard widgets and runbook blocks) is one its log group's
producer writes: the relay's JSON lines (checked against a real run of target/debug/relay with
RUST_LOG=debug and a scripted set of requests, including store failures and rate limiting), the API
Gateway access log format declared in infra/relay.yaml, or Logs Insights' own and Lambda platform fields.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import HEALTHCHECK_BIN, RELAY_BIN
from log_fields import (
    CANARY_FIELDS,
    LAMBDA_ONLY_CANARY_FIELDS,
    LAMBDA_ONLY_RELAY_FIELDS,
    LAMBDA_PLATFORM_FIELDS,
    RELAY_FIELDS,
    SYSTEM_FIELDS,
    log_group_kind,
)
from refs import dashboard_log_queries, query_fields, runbook_log_queries

ADMIN_TOKEN = "ops-check-admin-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class RunningRelay:
    """target/debug/relay on a free loopback port, its stdout collected as JSON lines."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "RUST_LOG": "debug", **env, "RELAY_LISTEN": f"127.0.0.1:{self.port}", "RELAY_LOG_FORMAT": "json"}
        self.handle = log.open("w")
        self.proc = subprocess.Popen([str(RELAY_BIN), *args], stdout=self.handle, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited at start; see {log}")
            try:
                if _request(self.base, "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"relay did not answer /healthz within 20 s; see {log}")

    def stop(self) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()
        lines = []
        for raw in self.log.read_text().splitlines():
            raw = raw.strip()
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


def _canary_lines(base: str, log: Path) -> list[dict]:
    """target/debug/healthcheck run once against `base` at RUST_LOG=info: its JSON lines (stderr)."""
    env = {**os.environ, "RUST_LOG": "info"}
    run = subprocess.run(
        [str(HEALTHCHECK_BIN), "--target", base, "--stage", "opscheck", "--color", "never"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    log.write_text(run.stderr)
    return [json.loads(raw) for raw in run.stderr.splitlines() if raw.startswith("{")]


@pytest.fixture(scope="session")
def real_lines(root) -> dict[str, list[dict]]:
    """The relay's own JSON lines (target `relay...`) from two scripted runs, and the canary's lines
    from a run against each (all probes passing, then failing)."""
    if not RELAY_BIN.exists():
        pytest.fail(f"{RELAY_BIN} is missing: scripts/ops-checks.sh builds it")
    out_dir = root / "test-output" / "ops"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[dict] = []
    json_headers = {"content-type": "application/json"}

    # 1. The embedded store: messages, expiry and the sweeper, the saved string with and without the token.
    with tempfile.TemporaryDirectory() as data:
        relay = RunningRelay(
            ["--store", f"sqlite:{data}/relay.db", "--rate-limit", "0", "--sweep-interval", "1s", "--env", "opscheck"],
            {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN},
            out_dir / "relay-sqlite.log",
        )
        try:
            status, body = _request(relay.base, "POST", "/messages", b'{"message":"hello"}', json_headers)
            assert status == 201, body
            msg_id = json.loads(body)["id"]
            assert _request(relay.base, "GET", f"/messages/{msg_id}")[0] == 200
            assert _request(relay.base, "GET", f"/messages/{msg_id}")[0] == 200
            assert _request(relay.base, "GET", "/messages")[0] == 200
            assert _request(relay.base, "PUT", f"/messages/{msg_id}", b'{"message":"again"}', json_headers)[0] == 200
            assert _request(relay.base, "POST", "/messages", b"{not json", json_headers)[0] == 400
            assert _request(relay.base, "GET", "/messages/not-an-id")[0] == 400
            status, _ = _request(relay.base, "POST", "/messages", b'{"message":"short-lived","ttl_seconds":1}', json_headers)
            assert status == 201
            assert _request(relay.base, "POST", "/app")[0] == 201
            assert _request(relay.base, "GET", "/saved")[0] == 200
            auth = {"content-type": "text/plain", "authorization": f"Bearer {ADMIN_TOKEN}"}
            assert _request(relay.base, "PUT", "/saved", b"ops check", auth)[0] == 204
            assert _request(relay.base, "PUT", "/saved", b"no token", {"content-type": "text/plain"})[0] == 401
            assert _request(relay.base, "DELETE", f"/messages/{msg_id}")[0] == 204
            canary = _canary_lines(relay.base, out_dir / "canary-healthy.log")
            time.sleep(2.5)  # the 1 s message expires and the sweeper removes it
        finally:
            lines += relay.stop()

    # 2. DynamoDB with a table that does not exist (on the local AWS-API server): store failures, 503s,
    # and rate limiting; logged as in the stacks (info, with the debug buffer: small here, so it overflows).
    relay = RunningRelay(
        ["--store", "dynamodb:relay-ops-check-no-such-table", "--rate-limit", "1", "--rate-limit-burst", "2", "--env", "opscheck",
         "--log-buffer", "debug", "--log-buffer-max-bytes", "1024"],
        {"RUST_LOG": "info"},
        out_dir / "relay-dynamodb-down.log",
    )
    try:
        statuses = [_request(relay.base, "GET", "/messages")[0] for _ in range(5)]
        assert 503 in statuses and 429 in statuses, statuses
        assert _request(relay.base, "GET", "/readyz")[0] == 503
        time.sleep(2.1)  # the rate limit's burst comes back
        # A create's store calls overflow the 1 KiB buffer: its flush says how many lines it dropped.
        assert _request(relay.base, "POST", "/messages", b'{"message":"x"}', json_headers)[0] == 503
        canary += _canary_lines(relay.base, out_dir / "canary-failing.log")
    finally:
        lines += relay.stop()
    own = [line for line in lines if str(line.get("target", "")).startswith("relay")]
    assert len(own) > 20, "too few relay log lines to judge"
    assert any(l.get("ok") is False for l in canary) and any(l.get("ok") is True for l in canary), canary
    return {"relay": own, "canary": canary}


@pytest.fixture(scope="session")
def real_relay_lines(real_lines) -> list[dict]:
    return real_lines["relay"]


def test_the_relay_field_list_names_fields_present_in_the_source(root):
    for name, source in RELAY_FIELDS.items():
        text = (root / source).read_text(encoding="utf-8")
        assert re.search(rf"\b{name}\b", text), f"{name} is not in {source}: the list in log_fields.py is stale"


def test_a_real_relay_run_emits_exactly_the_listed_fields(real_relay_lines):
    seen = {key for line in real_relay_lines for key in line}
    unknown = seen - set(RELAY_FIELDS)
    assert not unknown, f"the relay emits fields infra/tests/log_fields.py does not list: {sorted(unknown)}"
    missing = set(RELAY_FIELDS) - LAMBDA_ONLY_RELAY_FIELDS - seen
    assert not missing, f"listed fields no line of the scripted run carried: {sorted(missing)}"


def test_the_canary_field_list_names_fields_present_in_the_source(root):
    for name, source in CANARY_FIELDS.items():
        text = (root / source).read_text(encoding="utf-8")
        assert re.search(rf"\b{name}\b", text), f"{name} is not in {source}: the list in log_fields.py is stale"


def test_a_real_canary_run_emits_the_relay_line_shape_and_exactly_the_listed_fields(real_lines):
    lines = real_lines["canary"]
    for line in lines:
        assert list(line)[:6] == ["timestamp", "level", "target", "service", "version", "env"], line
        assert line["service"] == "healthcheck" and line["env"] == "opscheck", line
    seen = {key for line in lines for key in line}
    unknown = seen - set(CANARY_FIELDS)
    assert not unknown, f"the canary emits fields infra/tests/log_fields.py does not list: {sorted(unknown)}"
    missing = set(CANARY_FIELDS) - LAMBDA_ONLY_CANARY_FIELDS - seen
    assert not missing, f"listed canary fields no line of the run carried: {sorted(missing)}"


def test_each_probe_s_trace_id_leads_to_the_relay_lines_of_its_requests(real_lines):
    """The canary sends a traceparent on every probe request: the trace id it logs is on the relay's
    lines of those requests (the pivot from a failed probe to what the relay did)."""
    relay_traces = {line.get("trace_id") for line in real_lines["relay"]}
    probes = [l for l in real_lines["canary"] if l.get("message") == "Probe completed."]
    assert probes
    for probe in probes:
        assert re.fullmatch(r"[0-9a-f]{32}", probe["trace_id"]), probe
        assert probe["trace_id"] in relay_traces, f"no relay line of the trace of {probe}"


def test_request_lines_carry_the_request_fields(real_relay_lines):
    finished = [l for l in real_relay_lines if l.get("message") in ("Request finished.", "Request failed.")]
    assert finished
    for line in finished:
        for key in ("timestamp", "level", "service", "version", "env", "request_id", "method", "route", "status", "latency_ms"):
            assert key in line, f"{key} missing from {line}"
    # Error answers made through the relay's ApiError carry their problem code. /readyz writes its own
    # problem document and its lines have none, so runbook queries never group readiness by `problem`.
    failed = [l for l in finished if l["status"] >= 500 and l["route"] != "/readyz"]
    assert failed and all("problem" in l for l in failed), "server errors must carry their problem code"
    limited = [l for l in finished if l["status"] == 429]
    assert limited and all(l["problem"] == "rate-limited" for l in limited)


def access_log_format(templates) -> dict:
    """The stage's access log format as JSON; unquoted variables (numbers, e.g. status) read as 0."""
    fmt = templates["relay"]["Resources"]["ApiStage"]["Properties"]["AccessLogSettings"]["Format"]
    return json.loads(re.sub(r":(\$context\.[A-Za-z.]+)", ":0", fmt))


def _fields_for(kind: str, templates) -> set[str]:
    if kind == "relay":
        return set(RELAY_FIELDS) | SYSTEM_FIELDS | LAMBDA_PLATFORM_FIELDS
    if kind == "access":
        return set(access_log_format(templates)) | SYSTEM_FIELDS
    return set(CANARY_FIELDS) | SYSTEM_FIELDS | LAMBDA_PLATFORM_FIELDS


def _check(queries, templates) -> list[str]:
    out = []
    for q in queries:
        kind = log_group_kind(q.log_group)
        unknown = query_fields(q.query) - _fields_for(kind, templates)
        if unknown:
            out.append(f"{q.where} ({q.log_group}): fields no {kind} line carries: {sorted(unknown)}")
    return out


def test_dashboard_queries_read_only_emitted_fields(dashboards, templates):
    queries = [q for name, body in dashboards.items() for q in dashboard_log_queries(body, name)]
    assert queries
    problems = _check(queries, templates)
    assert not problems, "\n".join(problems)


def test_runbook_queries_read_only_emitted_fields(root, templates):
    queries = [q for path in sorted((root / "runbooks").glob("*.md")) for q in runbook_log_queries(path)]
    assert len(queries) >= 10
    problems = _check(queries, templates)
    assert not problems, "\n".join(problems)


def test_the_field_checker_rejects_unknown_fields(templates):
    from refs import LogQuery

    bad = [LogQuery("typo", "/aws/lambda/relay-${Env}", 'fields request_id, latency | filter level = "ERROR"')]
    assert _check(bad, templates)
    bad = [LogQuery("nested", "/aws/lambda/relay-${Env}", "filter span.request_id = 'x'")]
    assert _check(bad, templates)
    good = [LogQuery("ok", "/aws/lambda/relay-${Env}", 'stats count() as n by route | sort n desc')]
    assert not _check(good, templates)


def test_the_access_log_format_is_json_with_the_request_id(templates):
    fmt = access_log_format(templates)
    assert fmt["requestId"] == "$context.requestId"
    assert fmt["status"] == 0, "status is written as a number, so queries can compare it (status >= 500)"
    assert {"status", "routeKey", "integrationErrorMessage", "responseLatency"} <= set(fmt)
