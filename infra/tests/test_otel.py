"""OpenTelemetry spans, end to end, against a real OTLP/HTTP receiver on loopback that decodes every
export with the official protobuf definitions (opentelemetry-proto, PyPI).

1. The relay as a server (DynamoDB on the local AWS-API server through the fault proxy, logging at info
   with the debug buffer, as deployed), probed by the canary CLI, then one request answered 404 and one
   answered 503 with DynamoDB down: the spans must join the canary's traces, nest store calls under
   requests with their attempts as events, carry the semantic-convention attributes and statuses, and
   have the ids the relay's log lines show.
2. The relay in Lambda under the Runtime API stand-in, behind the HTTP API stand-in: each invocation's
   spans have reached the receiver when the invocation has returned (the sandbox may freeze after it),
   joined to the X-Ray trace API Gateway sends, or to a `traceparent`; with the collector gone, requests
   still succeed and say so in one WARN line each.
3. A server whose collector is gone answers every request and says so in the SDK's ERROR lines.
4. Sampling is decided before a request's span is made: an unexported request's store calls are not
   exported either, and the lines of every request keep a trace id.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid

import pytest

from conftest import HEALTHCHECK_BIN, RELAY_BIN, ROOT
from dynamodb_faults import Fault, FaultyDynamoDb
from lambda_sandbox import Clock, HttpApi, LambdaSandbox
from otlp_receiver import OtlpReceiver
from test_log_fields import RunningRelay, _request

OUT = ROOT / "test-output" / "otel"
# Requests this test sends with a trace context of its own, to find their spans.
MISSING = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
OUTAGE = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def _traceparent(trace: tuple[str, str]) -> dict[str, str]:
    return {"traceparent": f"00-{trace[0]}-{trace[1]}-01"}


def _create_table(table: str) -> None:
    created = subprocess.run([str(RELAY_BIN), "--store", f"dynamodb:{table}", "create-table"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr


def _servers(spans: list[dict]) -> list[dict]:
    return [s for s in spans if s["kind"] == "SPAN_KIND_SERVER"]


def _children(spans: list[dict], parent: dict) -> list[dict]:
    return [s for s in spans if s["parent_span_id"] == parent["span_id"] and s["trace_id"] == parent["trace_id"]]


@pytest.fixture(scope="module")
def run() -> dict:
    if not RELAY_BIN.exists() or not HEALTHCHECK_BIN.exists():
        pytest.fail(f"{RELAY_BIN} or {HEALTHCHECK_BIN} is missing: scripts/ops-checks.sh builds them")
    OUT.mkdir(parents=True, exist_ok=True)
    table = f"relay-otel-{uuid.uuid4().hex[:8]}"
    _create_table(table)
    clock = Clock()
    clock.begin_minute()
    proxy = FaultyDynamoDb(os.environ["AWS_ENDPOINT_URL"], clock)
    receiver = OtlpReceiver()
    relay = RunningRelay(
        ["--store", f"dynamodb:{table}", "--dynamodb-endpoint", proxy.endpoint, "--rate-limit", "0",
         "--env", "oteltest"],
        {"RUST_LOG": "info", "RELAY_LOG_BUFFER": "debug", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
         "OTEL_TRACES_SAMPLER": "always_on", "RELAY_CACHE_TTL": "0s"},
        OUT / "relay.log",
    )
    try:
        canary = subprocess.run(
            [str(HEALTHCHECK_BIN), "--target", relay.base, "--stage", "oteltest", "--color", "never"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "RUST_LOG": "info"},
        )
        (OUT / "canary.log").write_text(canary.stderr)
        assert canary.returncode == 0, canary.stderr
        missing = _request(relay.base, "GET", f"/messages/{uuid.uuid4()}", headers=_traceparent(MISSING))
        assert missing[0] == 404, missing
        proxy.fault = Fault("down")
        outage = _request(relay.base, "GET", "/messages", headers=_traceparent(OUTAGE))
        assert outage[0] == 503, outage
        proxy.fault = Fault()
    finally:
        lines = relay.stop()  # a graceful stop exports the spans left
        receiver.close()
        proxy.close()
    (OUT / "spans.json").write_text(json.dumps(receiver.spans, indent=1))
    probes = [json.loads(line) for line in canary.stderr.splitlines()
              if line.startswith("{") and json.loads(line).get("message") == "Probe completed."]
    return {"spans": receiver.spans, "malformed": receiver.malformed, "lines": lines, "probes": probes}


def test_every_probe_s_trace_has_the_relay_s_server_spans_as_children_of_the_canary(run):
    assert len(run["probes"]) >= 5, "the canary logged its probes"
    servers = _servers(run["spans"])
    for probe in run["probes"]:
        mine = [s for s in servers if s["trace_id"] == probe["trace_id"]]
        assert mine, f"no server span in the trace of probe {probe['probe']}"
        for span in mine:
            assert len(span["parent_span_id"]) == 16 and span["parent_span_id"] != "0" * 16, span
            assert span["parent_span_id"] not in {s["span_id"] for s in run["spans"]}, "a remote parent"
    assert all(s["resource"].get("service.name") == "relay" for s in run["spans"])
    assert all(s["resource"].get("service.version") for s in run["spans"])


def test_attributes_are_named_once_and_none_repeats_what_the_span_itself_says(run):
    assert run["malformed"] == [], "every attribute key is unique in its span (the OTLP spec's rule)"
    for span in run["spans"]:
        # The ids are the span's own, method and route are `http.request.method` and `http.route`, the
        # store's fields `db.operation.name` and `db.system`: the log lines' names are not exported again.
        repeated = {"trace_id", "span_id", "method", "route", "op", "backend"} & span["attributes"].keys()
        assert not repeated, span


def test_server_spans_carry_method_route_and_status(run):
    servers = _servers(run["spans"])
    assert servers
    for span in servers:
        attributes = span["attributes"]
        method, route = attributes["http.request.method"], attributes["http.route"]
        assert span["name"] == f"{method} {route}", span
        assert route.startswith("/"), route
        status = attributes["http.response.status_code"]
        assert isinstance(status, int), span
        assert span["status"] == ("STATUS_CODE_ERROR" if status >= 500 else "STATUS_CODE_UNSET"), span
    routes = {s["attributes"]["http.route"] for s in servers}
    assert {"/messages/{id}", "/messages", "/healthz"} <= routes, routes


def test_store_calls_are_child_spans_with_db_attributes_and_their_attempts_as_events(run):
    spans = run["spans"]
    servers = {s["span_id"]: s for s in _servers(spans)}
    stores = [s for s in spans if "db.system" in s["attributes"]]
    assert stores, "store spans were exported"
    for span in stores:
        assert span["attributes"]["db.system"] == "dynamodb"
        assert span["name"] == span["attributes"]["db.operation.name"], span
        assert span["kind"] == "SPAN_KIND_INTERNAL", span
        tries = [e["name"] for e in span["events"] if e["name"].startswith("DynamoDB call attempt ")]
        if tries and tries[-1] == "DynamoDB call attempt finished.":
            assert span["status"] == "STATUS_CODE_UNSET", span  # a retry that succeeded is no failure
        if span["status"] == "STATUS_CODE_ERROR":
            assert tries and tries[-1] == "DynamoDB call attempt failed.", span
    nested = [s for s in stores if s["parent_span_id"] in servers]
    assert all(servers[s["parent_span_id"]]["trace_id"] == s["trace_id"] for s in nested)
    assert {"create_message", "get_message", "delete_message", "count_messages"} <= {s["name"] for s in nested}
    attempts = [e for s in nested for e in s["events"] if e["name"].startswith("DynamoDB call attempt ")]
    assert attempts, "each DynamoDB attempt is an event of its store span"
    for event in attempts:
        assert event["attributes"]["call"] and int(event["attributes"]["attempt"]) >= 1, event


def test_a_failed_request_is_an_error_span_with_its_failed_attempts_and_a_client_error_is_not(run):
    spans = run["spans"]
    [missing] = _servers([s for s in spans if s["trace_id"] == MISSING[0]])
    assert missing["parent_span_id"] == MISSING[1]
    assert (missing["attributes"]["http.response.status_code"], missing["status"]) == (404, "STATUS_CODE_UNSET")
    [outage] = _servers([s for s in spans if s["trace_id"] == OUTAGE[0]])
    assert outage["parent_span_id"] == OUTAGE[1], "a child of the caller's span"
    assert (outage["attributes"]["http.response.status_code"], outage["status"]) == (503, "STATUS_CODE_ERROR")
    [store] = _children(spans, outage)
    assert (store["name"], store["status"]) == ("count_messages", "STATUS_CODE_ERROR")
    failed = [e for e in store["events"] if e["name"] == "DynamoDB call attempt failed."]
    assert failed and all(e["attributes"]["outcome"] != "ok" for e in failed), store["events"]
    assert all(e["attributes"].get("error") for e in failed), failed


def test_the_relay_s_lines_show_the_ids_of_the_exported_spans(run):
    requests = [line for line in run["lines"] if line.get("message") in ("Request finished.", "Request failed.")]
    exported = {(s["trace_id"], s["span_id"]): s for s in _servers(run["spans"])}
    assert len(requests) == len(exported), "one server span per request"
    for line in requests:
        assert (line["trace_id"], line["span_id"]) in exported, line
        # And back: a span found in the collector names the request's id, the pivot to its lines.
        span = exported[(line["trace_id"], line["span_id"])]
        assert span["attributes"]["request_id"] == line["request_id"], (span, line)
        assert (span["attributes"]["http.route"], span["attributes"]["http.request.method"]) == \
            (line["route"], line["method"]), (span, line)
    for line in run["lines"]:
        assert not any(key.startswith("otel.") for key in line), line
    buffered = [line for line in run["lines"] if line.get("trace_id") == OUTAGE[0] and line["level"] == "DEBUG"]
    assert buffered, "the failed request's debug buffer was written, with the same ids"


# ---- Lambda -------------------------------------------------------------------------------------------

XRAY_ROOT = "1-67891233-abcdef012345678912345678"
XRAY_PARENT = "53995c3f42cd8ad8"


@pytest.fixture(scope="module")
def on_lambda() -> dict:
    if not RELAY_BIN.exists():
        pytest.fail(f"{RELAY_BIN} is missing: scripts/ops-checks.sh builds it")
    OUT.mkdir(parents=True, exist_ok=True)
    table = f"relay-otel-{uuid.uuid4().hex[:8]}"
    _create_table(table)
    receiver = OtlpReceiver()
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    variables = {**aws, "RELAY_ENV": "oteltest", "RUST_LOG": "info", "RELAY_LOG_BUFFER": "debug",
                 "RELAY_STORE": f"dynamodb:{table}", "RELAY_RATE_LIMIT": "0",
                 "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    sandbox = LambdaSandbox(RELAY_BIN, "relay-oteltest", variables, Clock(), log_path=OUT / "lambda.log")
    api = HttpApi(sandbox, "oteltest", "$context.requestId $context.status")
    sandbox.clock.begin_minute()
    seen = {}
    try:
        xray = api.request("GET", "/messages", headers={"x-amzn-trace-id": f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1"})
        seen["xray"] = (xray, receiver.of_trace(XRAY_ROOT[2:].replace("-", "")))
        w3c = api.request("POST", "/messages", json.dumps({"message": "traced"}),
                          {"content-type": "application/json", **_traceparent(OUTAGE)})
        seen["w3c"] = (w3c, receiver.of_trace(OUTAGE[0]))
        receiver.close()  # the collector is gone
        seen["gone"] = [api.request("GET", "/healthz") for _ in range(2)]
    finally:
        api.close()
        sandbox.close()
        receiver.close()
    (OUT / "lambda-spans.json").write_text(json.dumps(receiver.spans, indent=1))
    lines = [json.loads(line.text) for line in sandbox.lines if line.text.startswith('{"timestamp"')]
    return {**seen, "lines": lines, "malformed": receiver.malformed}


def test_on_lambda_an_invocation_s_spans_are_exported_before_it_returns_in_the_x_ray_trace(on_lambda):
    response, spans = on_lambda["xray"]
    assert response.status == 200, response.body
    [server] = _servers(spans)
    assert server["name"] == "GET /messages"
    assert server["parent_span_id"] == XRAY_PARENT, "a child of the span API Gateway named"
    assert [s["name"] for s in _children(spans, server)] == ["count_messages"]
    [line] = [line for line in on_lambda["lines"] if line.get("message") == "Request finished."
              and line["route"] == "/messages" and line["method"] == "GET"]
    assert (line["trace_id"], line["span_id"]) == (server["trace_id"], server["span_id"])
    assert line["xray_trace_id"] == XRAY_ROOT
    assert on_lambda["malformed"] == [], "every attribute key is unique in its span"
    assert server["attributes"].get("xray_trace_id") == XRAY_ROOT, server


def test_on_lambda_a_traceparent_wins_over_the_runtime_s_x_ray_trace(on_lambda):
    response, spans = on_lambda["w3c"]
    assert response.status == 201, response.body
    [server] = _servers(spans)
    assert (server["name"], server["parent_span_id"]) == ("POST /messages", OUTAGE[1])
    assert server["attributes"]["http.response.status_code"] == 201
    assert "create_message" in [s["name"] for s in _children(spans, server)]


def test_on_lambda_a_collector_that_is_gone_fails_no_request_and_says_so(on_lambda):
    assert [r.status for r in on_lambda["gone"]] == [200, 200]
    warnings = [line for line in on_lambda["lines"] if line.get("message") == "OpenTelemetry spans not exported."]
    assert len(warnings) == 2, warnings
    assert all(line["level"] == "WARN" and line.get("error") for line in warnings), warnings


def test_a_server_whose_collector_is_gone_answers_every_request_and_says_so(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"
    relay = RunningRelay(["--store", f"sqlite:{tmp_path}/relay.db", "--rate-limit", "0"],
                         {"RUST_LOG": "info", "OTEL_EXPORTER_OTLP_ENDPOINT": gone, "OTEL_BSP_SCHEDULE_DELAY": "100"},
                         OUT / "relay-collector-gone.log")
    try:
        statuses = [_request(relay.base, "GET", "/messages")[0] for _ in range(10)]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "BatchSpanProcessor.ExportError" not in relay.log.read_text():
            time.sleep(0.2)
    finally:
        lines = relay.stop()
    assert statuses == [200] * 10
    failures = [line for line in lines if line.get("name") == "BatchSpanProcessor.ExportError"]
    assert failures and all(line["level"] == "ERROR" and line["target"] == "opentelemetry_sdk" for line in failures)
    assert all("network error" in line["error"] for line in failures), failures


def test_only_the_sampled_requests_are_exported_and_their_store_calls_with_them(tmp_path):
    receiver = OtlpReceiver()
    relay = RunningRelay(["--store", f"sqlite:{tmp_path}/relay.db", "--rate-limit", "0", "--cache-ttl", "0s"],
                         {"RUST_LOG": "info", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                          "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
                         OUT / "relay-sampled.log")
    unsampled = ("5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7")
    try:
        for _ in range(5):  # no caller: the ratio (0) decides
            assert _request(relay.base, "GET", "/messages")[0] == 200
        assert _request(relay.base, "GET", "/messages", headers={
            "traceparent": f"00-{unsampled[0]}-{unsampled[1]}-00"})[0] == 200
        assert _request(relay.base, "GET", "/messages", headers=_traceparent(MISSING))[0] == 200
    finally:
        lines = relay.stop()
        receiver.close()
    spans = receiver.spans
    assert {s["trace_id"] for s in spans} == {MISSING[0]}, "only the sampled caller's request"
    [server] = _servers(spans)
    assert [s["name"] for s in _children(spans, server)] == ["count_messages"]
    assert len(spans) == 2, "no store span of an unexported request, no sweeper span"
    requests = [line for line in lines if line.get("message") == "Request finished." and line["route"] == "/messages"]
    assert len(requests) == 7 and all(len(line["trace_id"]) == 32 for line in requests)
    assert [line["trace_id"] for line in requests].count(unsampled[0]) == 1, "its own trace, not exported"
