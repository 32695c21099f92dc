"""Incident drills (drills.py): each fault this machine can produce, played minute by simulated minute
through the real relay and canary, judged by every alarm and the runbooks' queries. The report table is
written to test-output/drills/drills.md.

| drill | how the fault is made |
|---|---|
| store down | the DynamoDB endpoint the relay (Lambda mode) talks to drops every connection |
| store throttling | half of the DynamoDB calls answered ProvisionedThroughputExceededException |
| slow store | every DynamoDB call answered 1.2 s late |
| Lambda errors | writes 2.5 s late under a 2 s function timeout: the invocations time out |
| admin-auth failures | eight PUT /saved a minute with a wrong token among the normal traffic |
| canary failing | the canary CLI probes a relay (server) whose store went down, publishing to CloudWatch |
| canary silent | the canary's Lambda entry can no longer reach CloudWatch, so it publishes nothing |
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

import drills
from conftest import HEALTHCHECK_BIN, RELAY_BIN, ROOT
from dynamodb_faults import Fault, FaultyDynamoDb
from lambda_sandbox import Clock, HttpApi, LambdaSandbox, LogLine, Sample, emf_samples
from logs_insights import Event, run as run_query
from refs import runbook_log_queries
from test_log_fields import RunningRelay

CANARY_LAMBDA_BIN = ROOT / "target" / "debug" / "healthcheck-lambda"
OUT = ROOT / "test-output" / "drills"
ADMIN_TOKEN = "drill-admin-token-0123456789abcdef"
WARM_UP = drills.warm_up_minutes()
JSON = {"content-type": "application/json"}


def _aws_env() -> dict[str, str]:
    """Credentials and region for the local AWS-API server, without its endpoint (each binary is given
    the endpoint it should use)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") and k != "AWS_ENDPOINT_URL"}


def _access_log_format(templates) -> str:
    return templates["relay"]["Resources"]["ApiStage"]["Properties"]["AccessLogSettings"]["Format"]


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _json_lines(path: Path, clock: Clock) -> list[LogLine]:
    """A server's or CLI's JSON lines, each at the simulated time of its own `timestamp`."""
    out = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            out.append(LogLine(clock.sim(_wall(json.loads(raw)["timestamp"])), raw))
    return out


def _create_table(env: drills.DrillEnv) -> None:
    subprocess.run(
        [str(RELAY_BIN), "--store", f"dynamodb:{env.table}", "--dynamodb-endpoint", os.environ["AWS_ENDPOINT_URL"],
         "create-table"], check=True, capture_output=True, timeout=60,
    )


class CanaryCli:
    """The canary CLI, run once a simulated minute with CloudWatch publishing to the local server; what
    it published is read back as samples, its JSON lines kept for the canary log group."""

    def __init__(self, env: drills.DrillEnv, clock: Clock, probes: str | None = None):
        self.env, self.clock, self.log = env, clock, OUT / f"{env.env}-canary.log"
        self.cw = boto3.client("cloudwatch")
        self.samples: list[Sample] = []
        self.text = ""
        self.probes = ["--probes", probes] if probes else []

    def run(self, target: str) -> None:
        started = _new_second()
        run = subprocess.run(
            [str(HEALTHCHECK_BIN), "--target", target, "--stage", self.env.env, "--cloudwatch", "--color", "never",
             *self.probes],
            capture_output=True, text=True, timeout=120, env={**os.environ, "RUST_LOG": "info"},
        )
        self.text += run.stderr
        self.samples += _canary_read_back(self.cw, self.env.env, started, time.time(), self.clock.sim(started))

    def lines(self) -> list[LogLine]:
        self.log.write_text(self.text)
        return _json_lines(self.log, self.clock)

    def failing_ids(self) -> set[str]:
        ids = {json.loads(l.text).get("request_id_sent") for l in self.lines() if json.loads(l.text).get("ok") is False}
        return ids - {None}


class RelayOnLambda:
    """The relay as function relay-<env> behind the HTTP API, its DynamoDB calls through the fault proxy,
    and the canary probing it over HTTP once a minute."""

    def __init__(self, env: drills.DrillEnv, templates, timeout_s: float = 15.0, canary_probes: str | None = None):
        _create_table(env)
        self.env = env
        self.clock = clock = Clock()
        self.proxy = FaultyDynamoDb(os.environ["AWS_ENDPOINT_URL"], clock)
        variables = {
            **_aws_env(), "RELAY_ENV": env.env, "RUST_LOG": "info", "RELAY_LOG_BUFFER": "debug", "RELAY_CACHE_TTL": "0s",
            "RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_RATE_LIMIT": "0", "RELAY_STORE": f"dynamodb:{env.table}",
            "RELAY_DYNAMODB_ENDPOINT": self.proxy.endpoint,
        }
        OUT.mkdir(parents=True, exist_ok=True)
        self.sandbox = LambdaSandbox(RELAY_BIN, env.function, variables, clock, timeout_s=timeout_s,
                                     log_path=OUT / f"{env.env}-relay.log")
        self.api = HttpApi(self.sandbox, env.api_id, _access_log_format(templates))
        self.url = self.api.serve()
        self.canary = CanaryCli(env, clock, canary_probes)
        self.ids: list[str] = []

    def minute(self, fault: Fault | None = None, creates: int = 2, reads: int = 2, counts: int = 2,
               saved: int = 1, deletes: int = 0) -> None:
        """One simulated minute: the fault (if it changes now), the users' traffic, one canary run."""
        self.clock.begin_minute()
        if fault is not None:
            self.proxy.fault = fault
        for _ in range(creates):
            r = self.api.request("POST", "/messages", json.dumps({"message": "drill", "ttl_seconds": 3600}), JSON)
            if r.status == 201:
                self.ids.append(json.loads(r.body)["id"])
        for k in range(reads):
            target = self.ids[-1 - (k % len(self.ids))] if self.ids else str(uuid.uuid4())
            self.api.request("GET", f"/messages/{target}")
        for _ in range(counts):
            self.api.request("GET", "/messages")
        for _ in range(saved):
            self.api.request("GET", "/saved")
        for _ in range(deletes):
            if self.ids:
                self.api.request("DELETE", f"/messages/{self.ids.pop(0)}")
        self.canary.run(self.url)

    def close(self) -> dict[str, list[LogLine]]:
        self.api.close()
        self.sandbox.close()
        self.proxy.close()
        return {"relay": self.sandbox.lines, "access": self.api.access_lines, "canary": self.canary.lines()}

    def samples(self) -> list[Sample]:
        return (self.sandbox.samples + self.api.samples + self.proxy.samples + emf_samples(self.sandbox.lines)
                + self.canary.samples)

    def follow_id(self) -> str | None:
        """The id the client of the first failing request holds: the relay's `x-request-id`, or API
        Gateway's request id when the relay never answered."""
        for r in self.api.responses:
            if r.status >= 500:
                return r.headers.get("x-request-id") or r.request_id
        return None

    def failing_ids(self, lambda_ids: bool = False) -> set[str]:
        """API Gateway ids of the requests answered 5xx (and the Lambda ids of failed invocations)."""
        ids = set()
        for r in self.api.responses:
            if r.status >= 500:
                ids |= {r.request_id, r.headers.get("x-request-id")} - {None}
        if lambda_ids:
            ids |= {r.invocation.request_id for r in self.api.responses if r.invocation.outcome != "ok"}
        return ids


def _finish(env: drills.DrillEnv, name: str, fault: str, fault_start: int, end: int, samples, groups, expected,
            allowed, failing_ids: set[str], may_be_empty: dict[str, str] | None = None) -> drills.Outcome:
    """Evaluate the alarms and run the expected alarms' runbook queries. `may_be_empty`: runbook
    queries (by `Runbook.md query N`) that rightly find nothing in this incident, with the reason."""
    outcome = drills.Outcome(name, fault, fault_start, end, drills.evaluate(env, samples, end), tuple(expected),
                             tuple(allowed), failing_ids, may_be_empty=may_be_empty or {})
    for alarm in expected:
        outcome.queries += drills.run_runbook(alarm, groups, failing_ids)
    outcome.groups = groups
    return outcome


def _lambda_drill(name: str, fault: str, relay: RelayOnLambda, healthy: int, minutes: list[dict],
                  expected, allowed, failing=None, lambda_ids: bool = False,
                  may_be_empty: dict[str, str] | None = None) -> drills.Outcome:
    """`healthy` quiet minutes, then one minute per entry of `minutes` (the first carries the fault)."""
    try:
        for _ in range(healthy):
            relay.minute()
        for spec in minutes:
            relay.minute(**spec)
    finally:
        groups = relay.close()
    failing_ids = failing(relay) if failing else relay.failing_ids(lambda_ids)
    fault_start = healthy * 60
    outcome = _finish(relay.env, name, fault, fault_start, (healthy + len(minutes)) * 60, relay.samples(), groups,
                      expected, allowed, failing_ids, may_be_empty)
    outcome.follow_id = relay.follow_id()
    return outcome


# ---- the drills ------------------------------------------------------------------------------------------


def drill_store_down(templates, env):
    relay = RelayOnLambda(env, templates)
    return _lambda_drill(
        "store down", "DynamoDB unreachable", relay, WARM_UP, [{"fault": Fault("down")}] + [{}] * 4,
        ["RelayStoreErrors", "RelayApi5xxRateHigh"], ["RelayCanaryFailing", "RelayPage"])


def drill_store_throttling(templates, env):
    # Throttled calls the SDK's retries do not rescue become 503s: enough for the 5xx and store-error
    # alarms in some minutes, which is their job, not this drill's.
    relay = RelayOnLambda(env, templates)
    return _lambda_drill(
        "store throttling", "half of DynamoDB calls throttled", relay, WARM_UP,
        [{"fault": Fault("throttle", fraction=0.5)}] + [{}] * 4,
        ["RelayDynamoDbThrottled"], ["RelayStoreErrors", "RelayApi5xxRateHigh", "RelayCanaryFailing", "RelayPage"])


def drill_slow_store(templates, env):
    # One delete a minute of a message the healthy minutes made (a read, then a write: 3 s). The canary
    # runs only its website probe here: its other probes make a dozen store calls, 1.5 s each.
    relay = RelayOnLambda(env, templates, canary_probes="website")
    traffic = {"creates": 0, "reads": 0, "counts": 0, "saved": 0, "deletes": 1}
    # Slow as the runbook's query means it: more than a second in the relay.
    slow = lambda r: {i for x in r.api.responses if x.invocation.duration_ms > 1000  # noqa: E731
                      for i in (x.request_id, x.headers.get("x-request-id")) if i}
    return _lambda_drill(
        "slow store", "every DynamoDB call 1.5 s late", relay, WARM_UP,
        [{"fault": Fault("slow", seconds=1.5), **traffic}] + [traffic] * 10,
        ["RelayApiLatencyHigh"], ["RelayCanaryFailing", "RelayPage"], failing=slow)


def drill_lambda_errors(templates, env):
    # A 2 s function timeout (healthy invocations take well under 0.2 s) and writes 2.5 s late.
    relay = RelayOnLambda(env, templates, timeout_s=2.0)
    traffic = {"creates": 1, "reads": 0, "counts": 8, "saved": 0}
    return _lambda_drill(
        "Lambda errors", "invocations time out (writes 2.5 s, timeout 2 s)", relay, WARM_UP,
        [{"fault": Fault("slow", seconds=2.5, writes_only=True), **traffic}] + [traffic] * 4,
        ["RelayLambdaErrors"], ["RelayApi5xxRateHigh", "RelayCanaryFailing", "RelayPage"], lambda_ids=True,
        may_be_empty={"RelayLambdaErrors.md query 1": "a timed-out invocation writes no relay error line"})


def drill_admin_auth(templates, env):
    relay = RelayOnLambda(env, templates)
    refused: set[str] = set()

    def guessing():
        for k in range(8):
            r = relay.api.request("PUT", "/saved", f"guess {k}", {
                "content-type": "text/plain", "authorization": f"Bearer guess-{uuid.uuid4().hex}"},
                source_ip="198.51.100.23")
            assert r.status == 401, r.body
            refused.add(r.request_id)
            refused.add(r.headers["x-request-id"])

    try:
        for minute in range(WARM_UP + 10):
            relay.minute(creates=2, reads=2, counts=1, saved=1)
            if minute >= WARM_UP:
                guessing()
    finally:
        groups = relay.close()
    return _finish(env, "admin-auth failures", "8 wrong-token writes a minute", WARM_UP * 60, (WARM_UP + 10) * 60,
                   relay.samples(), groups, ["RelayAdminAuthFailures"], [], refused,
                   {"RelayAdminAuthFailures.md query 3": "no guess succeeded, so no write was accepted"})


def _new_second() -> float:
    """Wait for the next whole second: the server keeps timestamps to the second, so runs that start
    in different seconds can be read back apart."""
    time.sleep(math.ceil(time.time()) - time.time() + 0.02)
    return time.time()


def _canary_read_back(cw, stage: str, start: float, end: float, at: float) -> list[Sample]:
    """What the canary put into the local CloudWatch-API server in the run that began at `start` (a
    fresh second, see _new_second) and ended at `end` (wall clock): one sample per metric and probe,
    placed at simulated time `at`."""
    out = []
    # The local server lists a metric once per datum put; each series is read once.
    series = {}
    pages = cw.get_paginator("list_metrics").paginate(
        Namespace="Relay/Canary", Dimensions=[{"Name": "Stage", "Value": stage}])
    for metric in (m for page in pages for m in page["Metrics"]):
        series[(metric["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"])))] = metric
    for metric in series.values():
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        if dims.get("Stage") != stage:
            continue
        stats = cw.get_metric_statistics(
            Namespace="Relay/Canary", MetricName=metric["MetricName"], Dimensions=metric["Dimensions"],
            StartTime=datetime.fromtimestamp(math.floor(start), timezone.utc),
            EndTime=datetime.fromtimestamp(end + 1, timezone.utc),
            Period=60, Statistics=["SampleCount", "Minimum", "Maximum"],
        )["Datapoints"]
        for point in stats:
            assert point["SampleCount"] == 1 and point["Minimum"] == point["Maximum"], (metric, point)
            out.append(Sample("Relay/Canary", metric["MetricName"], dims, at, point["Minimum"]))
    return out


def drill_canary_failing(templates, env):
    """The canary CLI against the relay as a server (how the canary sees any deployment: over HTTP)."""
    clock = Clock()
    proxy = FaultyDynamoDb(os.environ["AWS_ENDPOINT_URL"], clock)
    OUT.mkdir(parents=True, exist_ok=True)
    clock.begin_minute()
    _create_table(env)
    relay = RunningRelay(["--store", f"dynamodb:{env.table}", "--dynamodb-endpoint", proxy.endpoint,
                          "--rate-limit", "0", "--env", env.env],
                         {**_aws_env(), "RUST_LOG": "info", "RELAY_LOG_BUFFER": "debug"}, OUT / f"{env.env}-relay.log")
    canary = CanaryCli(env, clock)
    try:
        for minute in range(WARM_UP + 5):
            if minute:
                clock.begin_minute()
            if minute == WARM_UP:
                proxy.fault = Fault("down")
            canary.run(relay.base)
    finally:
        relay.stop()
        proxy.close()
    groups = {"relay": _json_lines(relay.log, clock), "canary": canary.lines()}
    outcome = _finish(env, "canary failing", "the canary probes a relay whose store is down", WARM_UP * 60,
                      (WARM_UP + 5) * 60, canary.samples, groups, ["RelayCanaryFailing"], ["RelayPage"],
                      canary.failing_ids())
    outcome.follow_id = min(canary.failing_ids())
    return outcome


def drill_canary_silent(templates, env):
    clock = Clock()
    cw = boto3.client("cloudwatch")
    OUT.mkdir(parents=True, exist_ok=True)
    clock.begin_minute()
    relay = RunningRelay(["--store", "memory:", "--rate-limit", "0", "--env", env.env], {},
                         OUT / f"{env.env}-relay.log")
    variables = {**_aws_env(), "HEALTHCHECK_TARGET": relay.base, "HEALTHCHECK_STAGE": env.env}
    dead = f"http://127.0.0.1:{_closed_port()}"
    healthy = LambdaSandbox(CANARY_LAMBDA_BIN, env.canary_function,
                            {**variables, "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}, clock, timeout_s=60)
    # The same function after its CloudWatch endpoint became unreachable (a broken network path or
    # endpoint setting): it runs its probes and cannot publish them.
    broken = LambdaSandbox(CANARY_LAMBDA_BIN, env.canary_function, {**variables, "AWS_ENDPOINT_URL": dead},
                           clock, timeout_s=60)
    samples, failed = [], set()
    try:
        for minute in range(WARM_UP + 9):
            if minute:
                clock.begin_minute()
            sandbox = healthy if minute < WARM_UP else broken
            event = {"id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
                     "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            started = _new_second()
            invocation = sandbox.invoke(event)
            if invocation.outcome != "ok":
                failed.add(invocation.request_id)
            samples += _canary_read_back(cw, env.env, started, time.time(), clock.sim(started))
    finally:
        healthy.close()
        broken.close()
        relay.stop()
    lines = sorted(healthy.lines + broken.lines, key=lambda l: l.time)
    (OUT / f"{env.env}-canary.log").write_text("".join(l.text + "\n" for l in lines))
    return _finish(env, "canary silent", "the canary cannot reach CloudWatch", WARM_UP * 60, (WARM_UP + 9) * 60, samples,
                   {"canary": lines, "relay": _json_lines(relay.log, clock)}, ["RelayCanarySilent"], [], failed)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The SLO tiers each drill's fault must raise (an SLO's slower tiers may fire with them; any other SLO's
# tier firing is unrelated): a fault users feel burns the error budget of what they feel, and the burn-rate
# alarms prove it from the same metrics the drill recorded. Refused admin writes are 4xx, no burn; a
# silent canary reports no runs, so no failed runs either (RelayCanarySilent's job).
SLO_BURNS = {
    "store-down": ["RelaySloApiAvailabilityFast", "RelaySloCanarySuccessFast"],
    "store-throttling": ["RelaySloApiAvailabilityFast", "RelaySloCanarySuccessFast"],
    "slow-store": ["RelaySloApiLatencySlow"],
    "lambda-errors": ["RelaySloApiAvailabilityFast", "RelaySloCanarySuccessFast", "RelaySloApiLatencyTicket"],
    "admin-auth": [],
    "canary-failing": ["RelaySloCanarySuccessFast"],
    "canary-silent": [],
}

DRILLS = {
    "store-down": drill_store_down,
    "store-throttling": drill_store_throttling,
    "slow-store": drill_slow_store,
    "lambda-errors": drill_lambda_errors,
    "admin-auth": drill_admin_auth,
    "canary-failing": drill_canary_failing,
    "canary-silent": drill_canary_silent,
}


# Drills mostly wait (on late answers, timeouts and the clock), and each plays in its own environment,
# so they run side by side.
PARALLEL = 4


@pytest.fixture(scope="session")
def outcomes(templates):
    """Every drill, run once; the report is written whatever they show."""
    for binary in (RELAY_BIN, HEALTHCHECK_BIN, CANARY_LAMBDA_BIN):
        if not binary.exists():
            pytest.fail(f"{binary} is missing: scripts/ops-checks.sh builds it")
    done = {}
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(drill, templates, drills.DrillEnv(name)) for name, drill in DRILLS.items()}
        errors = {}
        for name, future in futures.items():
            try:
                done[name] = future.result()
            except Exception as error:  # every drill's failure is reported, not just the first
                errors[name] = error
    if done:
        drills.write_report([done[n] for n in DRILLS if n in done], OUT)
    if errors:
        raise RuntimeError("drills failed to run: " + "; ".join(f"{n}: {e!r}" for n, e in errors.items()))
    return done


# ---- the verdicts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DRILLS))
def test_the_drill_burns_the_error_budget_of_what_users_feel(outcomes, name):
    outcome = outcomes[name]
    for tier in SLO_BURNS[name]:
        assert outcome.first_alarm(tier) is not None, f"{name}: {tier} never reached ALARM; states {outcome.states[tier]}"


@pytest.mark.parametrize("name", list(DRILLS))
def test_the_drill_raises_its_alarms_in_time_and_nothing_unrelated(outcomes, name):
    outcome = outcomes[name]
    severity = drills.severities()
    for alarm in outcome.expected:
        minutes = outcome.minutes_to_alarm(alarm)
        promise = drills.promised_minutes(alarm)
        assert minutes is not None, f"{name}: {alarm} never reached ALARM; states {outcome.states[alarm]}"
        assert 0 < minutes <= promise, f"{name}: {alarm} took {minutes} minutes, its runbook promises {promise}"
        if severity[alarm] == "page":
            assert outcome.first_alarm("RelayPage") is not None, f"{name}: {alarm} is a page, RelayPage stayed quiet"
    burned = drills.slo_tiers_of(SLO_BURNS[name])
    pages = {"RelayPage"} if any(severity[a] == "page" for a in (*outcome.expected, *outcome.allowed, *burned)) else set()
    # An SLO window alarm is judged through its tier's composite, which SLO_BURNS names.
    unrelated = (set(outcome.fired()) - set(outcome.expected) - set(outcome.allowed) - pages - burned
                 - drills.slo_window_alarms())
    assert not unrelated, f"{name}: unrelated alarms fired: {sorted(unrelated)}"
    before = [alarm for alarm, states in outcome.states.items()
              if any(now == outcome.fault_start and s == "ALARM" for now, s in states)]
    assert not before, f"{name}: in ALARM when the fault began, after {WARM_UP} healthy minutes: {before}"


@pytest.mark.parametrize("name", list(DRILLS))
def test_the_runbook_queries_find_the_failing_requests(outcomes, name):
    outcome = outcomes[name]
    assert outcome.failing_ids, f"{name}: the drill produced no failing request"
    for alarm in outcome.expected:
        results = [q for q in outcome.queries if q.where.startswith(f"{alarm}.md")]
        assert results, f"{alarm}'s runbook has no query"
        empty = [q.where for q in results if not q.rows and q.where not in outcome.may_be_empty]
        assert not empty, f"{name}: these runbook queries found nothing during the incident: {empty}"
        wrongly_empty = [w for w in outcome.may_be_empty if any(q.where == w and q.rows for q in results)]
        assert not wrongly_empty, f"{name}: expected to find nothing, but did: {wrongly_empty}"
        found = set().union(*(q.ids & outcome.failing_ids for q in results))
        assert found, f"{name}: no query of runbooks/{alarm}.md names a failing request"
        for q in results:
            strangers = q.ids - outcome.failing_ids
            assert not strangers, f"{name}: {q.where} lists requests that did not fail: {sorted(strangers)[:5]}"


@pytest.mark.parametrize("name", ["store-down", "canary-failing", "lambda-errors"])
def test_a_failing_request_id_leads_to_its_lines(outcomes, name):
    """The on-call overview's request-id queries, given the id a user of a failing request reports,
    return that request's lines."""
    outcome = outcomes[name]
    failing = outcome.follow_id
    assert failing in outcome.failing_ids
    found = 0
    for query in runbook_log_queries(ROOT / "runbooks" / "README.md"):
        if "PASTE-THE-REQUEST-ID" not in query.query:
            continue
        from log_fields import log_group_kind

        lines = outcome.groups.get(log_group_kind(query.log_group), [])
        rows = run_query(query.query.replace("PASTE-THE-REQUEST-ID", failing), drills.events(lines))
        found += len(rows)
    assert found, f"{name}: no line of request {failing} found by the overview's request-id queries"


def test_a_failed_probe_s_trace_id_leads_to_the_relay_s_store_calls(outcomes):
    """The overview's trace-id query, given the trace id of a probe that failed (the canary logs it and
    sends it as traceparent), returns the relay's lines of that probe's requests, with the DynamoDB
    attempts that failed (the relay logs at info: the debug buffer wrote them)."""
    outcome = outcomes["canary-failing"]
    failed = [json.loads(l.text) for l in outcome.groups["canary"] if json.loads(l.text).get("ok") is False]
    assert failed, "the drill has failed probes"
    queries = [q for q in runbook_log_queries(ROOT / "runbooks" / "README.md") if "PASTE-THE-TRACE-ID" in q.query]
    assert queries, "the overview has a trace-id query"
    for probe in failed[:3]:
        rows = [row for q in queries
                for row in run_query(q.query.replace("PASTE-THE-TRACE-ID", probe["trace_id"]),
                                     drills.events(outcome.groups["relay"]))]
        messages = {row.get("message") for row in rows}
        assert "Request failed." in messages, f"{probe['probe']}: {rows}"
        assert "DynamoDB call attempt failed." in messages, f"{probe['probe']}: the store calls are there: {rows}"


def test_relay_queries_read_the_same_with_and_without_emf_documents(outcomes, dashboards):
    """EMF documents share the relay's log group and carry its labels (op, route, error_code...) as top-level
    members; no query may count them as log lines."""
    from log_fields import log_group_kind
    from refs import dashboard_log_queries

    lines = [l for o in outcomes.values() for l in o.groups.get("relay", [])]
    with_emf = drills.events(lines)
    without = [e for e in with_emf if not any(key.startswith("_aws.") for key in e.fields)]
    assert len(without) < len(with_emf), "the drills captured no EMF documents"
    queries = [q for path in sorted((ROOT / "runbooks").glob("*.md")) for q in runbook_log_queries(path)]
    queries += [q for name, body in dashboards.items() for q in dashboard_log_queries(body, name)]
    checked = 0
    for q in queries:
        if log_group_kind(q.log_group) != "relay":
            continue
        checked += 1
        assert run_query(q.query, with_emf) == run_query(q.query, without), f"{q.where} counts EMF documents"
    assert checked >= 10


def test_the_drill_report_is_written(outcomes):
    text = (OUT / "drills.md").read_text()
    for outcome in outcomes.values():
        assert f"| {outcome.name} |" in text


def test_the_dashboards_access_log_errors_widget_lists_only_failed_requests(outcomes, dashboards):
    """The access log writes "-" for an unset integrationErrorMessage: the widget must not match every
    request."""
    from refs import dashboard_log_queries

    widgets = [q for name, body in dashboards.items() for q in dashboard_log_queries(body, name)
               if q.log_group.endswith("/access") and "integrationErrorMessage" in q.query and "filter" in q.query]
    assert widgets, "the dashboard has no access-log errors widget"
    outcome = outcomes["lambda-errors"]
    lines = outcome.groups["access"]
    for widget in widgets:
        rows = run_query(widget.query, drills.events(lines))
        ids = drills.row_ids(rows)
        assert ids, f"{widget.where} found none of the failed requests"
        assert ids <= outcome.failing_ids, f"{widget.where} lists requests that succeeded"
