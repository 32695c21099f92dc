"""The SLOs of slos/relay.yaml: their behaviour on both backends (scripts/slo-tests.sh: the CloudWatch
evaluator and promtool on the same fixtures, required to agree), the generated rules and dashboards being
current, promtool accepting the rules, and a real Prometheus that scrapes a real relay computing every SLO's
error ratio from the series the relay really writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import slo
from conftest import ROOT
from test_log_fields import RELAY_BIN, RunningRelay, _free_port, _request


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: scripts/ops-checks.sh installs Debian's prometheus package")
    return found


def test_every_slo_behaves_the_same_on_cloudwatch_and_prometheus():
    run = subprocess.run(
        [sys.executable, str(ROOT / "slos" / "slo_tests.py"), "--promtool", _tool("promtool")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all SLO tests passed: both backends agree" in run.stdout


def test_the_generated_rules_and_dashboards_are_what_the_spec_compiles_to():
    run = subprocess.run([sys.executable, str(ROOT / "slos" / "slo.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_accepts_the_rules():
    run = subprocess.run([_tool("promtool"), "check", "rules", str(slo.PROMETHEUS_FILE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    spec = slo.load()
    with_prometheus = [s for s in spec.slos if s.prometheus is not None]
    assert f"{len(with_prometheus) * (len(spec.windows()) + len(spec.tiers))} rules found" in run.stdout, run.stdout


@pytest.mark.parametrize("broken, why", [
    ({"objective": 100}, "not a percentage below 100"),
    ({"sli": {"cloudwatch": {"metrics": {}, "error_ratio": "0"}}}, "prometheus_absent"),
])
def test_the_spec_loader_refuses_a_broken_slo(tmp_path, broken, why):
    data = yaml.safe_load(slo.SPEC_FILE.read_text(encoding="utf-8"))
    data["slos"][0].update(broken)
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValueError, match=why):
        slo.load(path)


def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_a_real_prometheus_scraping_a_relay_computes_every_slo_error_ratio(root, tmp_path):
    """Healthy traffic (creates and reads, and a client mistake, which is no error): every recorded error
    ratio exists and is 0. A selector naming a label value the relay never writes (a bucket that does not
    exist, a route) would leave the series absent, or the latency ratio at 1."""
    if not RELAY_BIN.exists():
        pytest.fail(f"{RELAY_BIN} is missing: scripts/ops-checks.sh builds it")
    out = root / "test-output" / "ops"
    out.mkdir(parents=True, exist_ok=True)
    relay = RunningRelay(["--store", "memory:", "--rate-limit", "0"], {}, out / "slo-prometheus-relay.log")
    prom_port = _free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp_path))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(slo.PROMETHEUS_FILE)],
        "scrape_configs": [{"job_name": "relay", "static_configs": [{"targets": [f"127.0.0.1:{relay.port}"]}]}],
    }), encoding="utf-8")
    log = (out / "slo-prometheus.log").open("w")
    prom = subprocess.Popen(
        [_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        expected = {s.name for s in slo.load().slos if s.prometheus is not None}
        seen: dict[str, float] = {}
        while time.monotonic() < deadline and set(seen) != expected:
            for _ in range(5):
                status, body = _request(relay.base, "POST", "/messages", json.dumps({"message": "slo"}).encode(),
                                        {"content-type": "application/json"})
                assert status == 201, body
                message_id = json.loads(body)["id"]
                assert _request(relay.base, "GET", f"/messages/{message_id}")[0] == 200
            assert _request(relay.base, "GET", "/messages/not-a-uuid")[0] == 400
            try:
                for row in _query(base, "slo:error_ratio:rate5m"):
                    seen[row["metric"]["slo"]] = float(row["value"][1])
            except OSError:
                pass  # Prometheus still starting
            time.sleep(1)
        assert set(seen) == expected, f"recorded error ratios after 60 s: {seen}; see {out / 'slo-prometheus.log'}"
        assert all(value == 0 for value in seen.values()), f"a healthy relay burns budget: {seen}"
        assert _query(base, 'ALERTS{alertstate="firing"}') == []
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        relay.stop()
