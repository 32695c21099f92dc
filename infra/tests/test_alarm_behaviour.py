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
