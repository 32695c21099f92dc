"""`slos/report.py`, the error-budget report, against both sources with seeded history: the local
CloudWatch-API server (PutMetricData of three days, one bad hour) and a real Prometheus server started on
blocks backfilled with `promtool tsdb create-blocks-from openmetrics` (the same three days as counters).
The report must find the attainment, the budget left and the worst hour that the seeded numbers give.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from conftest import ROOT, debian_tool
from test_log_fields import _free_port

REPORT = ROOT / "slos" / "report.py"
DAYS = 3
HOURS = DAYS * 24
BAD_HOUR = 30  # hours after the window's start
END = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
START = END - timedelta(hours=HOURS)


def _report(*args: str) -> dict:
    run = subprocess.run([sys.executable, str(REPORT), *args, "--window", f"{DAYS}d", "--end", END.isoformat(), "--json", "-"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return {row["slo"]: row for row in json.loads(run.stdout)["slos"]}


def _markdown(*args: str) -> str:
    run = subprocess.run([sys.executable, str(REPORT), *args, "--window", f"{DAYS}d", "--end", END.isoformat()],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _put(cw, namespace: str, data: list[dict]) -> None:
    for k in range(0, len(data), 1000):
        cw.put_metric_data(Namespace=namespace, MetricData=data[k:k + 1000])


def test_the_report_reads_cloudwatch_history_and_finds_the_budget_and_the_worst_hour():
    cw = boto3.client("cloudwatch")  # the region the report uses: AWS_REGION
    env, api = f"report{uuid.uuid4().hex[:8]}", f"api{uuid.uuid4().hex[:8]}"
    api_dims = [{"Name": "ApiId", "Value": api}, {"Name": "Stage", "Value": "$default"}]
    requests, errors = [], []
    for hour in range(HOURS):
        at = START + timedelta(hours=hour, minutes=30)
        requests.append({"MetricName": "Count", "Dimensions": api_dims, "Timestamp": at, "Value": 1000.0})
        errors.append({"MetricName": "5xx", "Dimensions": api_dims, "Timestamp": at, "Value": 50.0 if hour == BAD_HOUR else 0.0})
    _put(cw, "AWS/ApiGateway", requests + errors)
    # One canary run a minute; the runs of two hours fail once in six.
    runs = []
    for minute in range(HOURS * 60):
        hour = minute // 60
        failed = hour in (BAD_HOUR, BAD_HOUR + 1) and minute % 6 == 0
        runs.append({"MetricName": "RunSuccess", "Dimensions": [{"Name": "Stage", "Value": env}],
                     "Timestamp": START + timedelta(minutes=minute, seconds=20), "Value": 0.0 if failed else 1.0})
    _put(cw, "Relay/Canary", runs)

    rows = _report("cloudwatch", "--env", env, "--api-id", api)
    availability = rows["api-availability"]
    ratio = 50 / (HOURS * 1000)
    assert availability["attainment_percent"] == pytest.approx(100 * (1 - ratio), abs=1e-4)
    assert availability["budget_left_percent"] == pytest.approx(100 * (1 - ratio / 0.001), abs=0.01)
    assert availability["worst_hour"] == (START + timedelta(hours=BAD_HOUR)).strftime("%Y-%m-%dT%H:%MZ")
    assert availability["worst_hour_error_percent"] == pytest.approx(5.0)

    canary = rows["canary-success"]
    failed_runs = 2 * 10
    assert canary["attainment_percent"] == pytest.approx(100 * (1 - failed_runs / (HOURS * 60)), abs=1e-4)
    assert canary["budget_left_percent"] == pytest.approx(100 * (1 - failed_runs / (HOURS * 60) / 0.005), abs=0.01)
    assert canary["worst_hour"] == (START + timedelta(hours=BAD_HOUR)).strftime("%Y-%m-%dT%H:%MZ")
    assert canary["worst_hour_error_percent"] == pytest.approx(100 * 10 / 60, abs=1e-3)

    latency = rows["api-latency"]
    assert latency["attainment_percent"] is None and latency["events"].startswith("no data"), latency

    text = _markdown("cloudwatch", "--env", env, "--api-id", api)
    assert "| API availability | 99.9% over 30d |" in text and "| API latency | 99% over 30d | no data" in text, text


def _openmetrics() -> str:
    """Three days of the relay's counters, a sample a minute: 100 requests a minute, of which 10 are 5xx
    in the bad hour; scrapes of /metrics that must not count; every request under 300 ms."""
    series = {
        'relay_http_requests_total{route="/messages",method="POST",status_class="2xx"}': lambda h: 100 - (10 if h == BAD_HOUR else 0),
        'relay_http_requests_total{route="/messages",method="POST",status_class="5xx"}': lambda h: 10 if h == BAD_HOUR else 0,
        'relay_http_requests_total{route="/metrics",method="GET",status_class="2xx"}': lambda h: 1000,
    }
    buckets = {
        'relay_http_request_duration_seconds_bucket{route="/messages",method="POST",le="0.3"}': lambda h: 100,
        'relay_http_request_duration_seconds_bucket{route="/messages",method="POST",le="+Inf"}': lambda h: 100,
        'relay_http_request_duration_seconds_count{route="/messages",method="POST"}': lambda h: 100,
        'relay_http_request_duration_seconds_sum{route="/messages",method="POST"}': lambda h: 5,
    }
    start = int(START.timestamp())
    out = []

    def family(header: list[str], members: dict) -> None:
        out.extend(header)
        for name, per_minute in members.items():
            total = 0
            for minute in range(HOURS * 60 + 1):
                out.append(f"{name} {total} {start + minute * 60}")
                total += per_minute(minute // 60)

    family(["# TYPE relay_http_requests counter"], series)
    family(["# TYPE relay_http_request_duration_seconds histogram"], buckets)
    out.append("# EOF")
    return "\n".join(out) + "\n"


def test_the_report_reads_a_prometheus_server_with_backfilled_history(tmp_path):
    promtool, prometheus = debian_tool("promtool"), debian_tool("prometheus")
    source = tmp_path / "history.om"
    source.write_text(_openmetrics(), encoding="utf-8")
    data = tmp_path / "tsdb"
    made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {}\nscrape_configs: []\n", encoding="utf-8")
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={data}",
                               "--storage.tsdb.retention.time=30d", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.3)
        rows = _report("prometheus", "--url", url)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    availability = rows["api-availability"]
    ratio = 10 * 60 / (HOURS * 60 * 100)
    assert availability["attainment_percent"] == pytest.approx(100 * (1 - ratio), abs=1e-3)
    assert availability["budget_left_percent"] == pytest.approx(100 * (1 - ratio / 0.001), abs=0.5)
    assert availability["worst_hour"] == (START + timedelta(hours=BAD_HOUR)).strftime("%Y-%m-%dT%H:%MZ")
    assert availability["worst_hour_error_percent"] == pytest.approx(10.0, abs=0.2)
    latency = rows["api-latency"]
    assert latency["attainment_percent"] == pytest.approx(100.0) and latency["budget_left_percent"] == pytest.approx(100.0)
    assert rows["canary-success"]["events"].startswith("no Prometheus SLI")


def test_the_report_says_so_and_exits_2_when_it_cannot_read_the_source():
    port = _free_port()  # nothing listens there
    run = subprocess.run([sys.executable, str(REPORT), "prometheus", "--url", f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "slo-report: cannot read the SLIs" in run.stderr and "Connection refused" in run.stderr, run.stderr
