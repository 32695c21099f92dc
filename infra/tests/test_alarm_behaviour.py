"""The alarms' behaviour tests (scripts/alarm-tests.sh) as part of the ops checks: every alarm fires on
its firing cases and stays quiet on its quiet ones, under CloudWatch's semantics, and every mutation of
an alarm is noticed."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_every_alarm_behaves_as_its_cases_say():
    run = subprocess.run(
        [sys.executable, str(ROOT / "alarms" / "alarm_tests.py")], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all alarm tests passed" in run.stdout


def test_the_deploy_gate_watches_long_enough_to_see_a_regression_page():
    """A release that breaks everything at the moment its deploy completes: by the end of the gate
    (infra/render.py --gate-seconds, what the deploy workflow waits), with CloudWatch seeing each minute
    a minute late, every paging alarm that judges traffic is in ALARM, and the composite pages."""
    sys.path.insert(0, str(ROOT / "alarms"))
    import alarm_tests
    import cloudwatch
    import render

    gate = render.gate_seconds()
    alarms = alarm_tests.load_alarms()
    store = cloudwatch.MetricStore()
    minutes = range(-20, gate // 60 + 1)
    for minute in minutes:
        broken = minute >= 0
        at = minute * 60 + 30
        store.put(cloudwatch.MetricId.of("AWS/ApiGateway", "Count", {"ApiId": "testapi", "Stage": "$default"}), at, 100)
        store.put(cloudwatch.MetricId.of("AWS/ApiGateway", "5xx", {"ApiId": "testapi", "Stage": "$default"}), at, 100 if broken else 0)
        for probe in ("website", "api-roundtrip"):
            store.put(cloudwatch.MetricId.of("Relay/Canary", "Success", {"Probe": probe, "Stage": "test"}), at, 0 if broken else 1)
    seen_at = gate - render.METRIC_DELAY_SECONDS
    history = alarms.history(store, range(-20 * 60, seen_at + 1, 60))
    states = {name: changes[-1][1] for name, changes in history.items()}
    paging = [e["name"] for e in render.load_alarms()["alarms"] if e["severity"] == "page" and e["properties"].get("TreatMissingData") != "breaching"]
    assert paging, "no paging alarm judges traffic"
    for name in paging:
        assert states[name] == cloudwatch.ALARM, f"{name} not in ALARM by the end of the {gate} s gate"
    assert states[alarms.paging] == cloudwatch.ALARM


def test_the_deploy_workflow_gates_for_as_long_as_the_alarms_need():
    workflow = (ROOT / ".github" / "workflows" / "deploy.yml").read_text(encoding="utf-8")
    assert "infra/render.py --gate-seconds" in workflow
