"""A real Prometheus (Debian's package) scraping a real relay, with the SLO rules loaded: every SLO's
recorded error ratio exists and is 0 under healthy traffic, and every panel of the Grafana dashboard
(dashboards/relay-grafana.json) shows data, 0 included, on a healthy relay that has never failed.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import slo
from conftest import ROOT, debian_tool
from test_log_fields import RELAY_BIN, RunningRelay, _free_port, _request

GRAFANA = ROOT / "dashboards" / "relay-grafana.json"



def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _traffic(relay: RunningRelay) -> None:
    """Creates and reads, a client mistake (no error), and an admin write refused (a 4xx too)."""
    for _ in range(5):
        status, body = _request(relay.base, "POST", "/messages", json.dumps({"message": "prometheus"}).encode(),
                                {"content-type": "application/json"})
        assert status == 201, body
        message_id = json.loads(body)["id"]
        assert _request(relay.base, "GET", f"/messages/{message_id}")[0] == 200
    assert _request(relay.base, "GET", "/messages/not-a-uuid")[0] == 400


@pytest.fixture(scope="module")
def prometheus(root, tmp_path_factory):
    """(Prometheus base URL) scraping a memory-store relay every second, the SLO rules loaded, after a
    few seconds of healthy traffic; the relay keeps getting traffic while the tests query."""
    if not RELAY_BIN.exists():
        pytest.fail(f"{RELAY_BIN} is missing: scripts/ops-checks.sh builds it")
    out = root / "test-output" / "ops"
    out.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("prometheus")
    relay = RunningRelay(["--store", "memory:", "--rate-limit", "0"], {}, out / "prometheus-relay.log")
    port = _free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(slo.PROMETHEUS_FILE)],
        "scrape_configs": [{"job_name": "relay", "static_configs": [{"targets": [f"127.0.0.1:{relay.port}"]}]}],
    }), encoding="utf-8")
    log = (out / "prometheus.log").open("w")
    server = subprocess.Popen(
        [debian_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tempfile.mkdtemp(dir=tmp)}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            _traffic(relay)
            try:
                # Two scrapes at least, so rate() has something to compare, and the rules evaluated.
                if len(_query(base, "slo:error_ratio:rate5m")) == sum(s.prometheus is not None for s in slo.load().slos) \
                        and _query(base, "count_over_time(up[1m]) >= 4"):
                    break
            except OSError:
                pass  # still starting
            assert time.monotonic() < deadline, f"Prometheus saw nothing in 60 s; see {out / 'prometheus.log'}"
            time.sleep(1)
        yield base, relay
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        relay.stop()


def test_every_slo_error_ratio_is_recorded_and_0_on_a_healthy_relay(prometheus):
    """A selector naming a label value the relay never writes (a bucket that does not exist, a route)
    would leave the series absent, or the latency ratio at 1."""
    base, _ = prometheus
    seen = {row["metric"]["slo"]: float(row["value"][1]) for row in _query(base, "slo:error_ratio:rate5m")}
    assert set(seen) == {s.name for s in slo.load().slos if s.prometheus is not None}, seen
    assert all(value == 0 for value in seen.values()), f"a healthy relay burns budget: {seen}"
    assert _query(base, 'ALERTS{alertstate="firing"}') == []


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$job", ".*").replace("$__rate_interval", "1m")
            assert "$" not in expr, f"{panel['title']}: a dashboard variable this test does not know: {expr}"
            out.append((panel["title"], expr))
    return out


def test_every_grafana_panel_shows_data_on_a_healthy_relay(prometheus):
    """Grafana shows "No data" for a query that returns no series: a labelled counter that appears only
    on first use (store errors, rate limits, refused admin writes) must still show 0."""
    base, relay = prometheus
    _traffic(relay)
    empty = {}
    panels: dict[str, bool] = {}
    for title, expr in _panel_queries():
        rows = _query(base, expr)
        panels[title] = panels.get(title, False) or bool(rows)
        if not rows:
            empty.setdefault(title, []).append(expr)
    assert len(panels) >= 14, "the dashboard's panels were not found"
    missing = {t: empty[t] for t, shown in panels.items() if not shown}
    assert not missing, "panels with no data on a healthy relay:\n" + "\n".join(f"  {t}: {q}" for t, q in missing.items())
    partly = {t: q for t, q in empty.items() if panels[t]}
    assert not partly, f"panel lines with no data (each line must show, 0 included): {partly}"
