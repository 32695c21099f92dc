"""The SLOs of slos/relay.yaml: their behaviour on both backends (scripts/slo-tests.sh: the CloudWatch
evaluator and promtool on the same fixtures, required to agree), the generated rules and dashboards being
current, and promtool accepting the rules. (A real Prometheus computing them from a real relay:
test_prometheus.py.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import slo
from conftest import ROOT, debian_tool



def test_every_slo_behaves_the_same_on_cloudwatch_and_prometheus():
    run = subprocess.run(
        [sys.executable, str(ROOT / "slos" / "slo_tests.py"), "--promtool", debian_tool("promtool")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all SLO tests passed: both backends agree" in run.stdout


def test_the_generated_rules_and_dashboards_are_what_the_spec_compiles_to():
    run = subprocess.run([sys.executable, str(ROOT / "slos" / "slo.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_accepts_the_rules():
    run = subprocess.run([debian_tool("promtool"), "check", "rules", str(slo.PROMETHEUS_FILE)], capture_output=True, text=True)
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
