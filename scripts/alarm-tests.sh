#!/usr/bin/env bash
# Alarm behaviour tests: every alarm of alarms/alarms.yaml and the paging composite, run through
# CloudWatch's alarm semantics (alarms/cloudwatch.py) over the cases in alarms/tests/*.yaml, with
# mutations of every alarm and AWS's missing-data tables (see alarms/alarm_tests.py). Offline, a few
# seconds; prints a table per alarm and exits 1 on any failure.
#
#   scripts/alarm-tests.sh [alarms/tests/FILE.yaml...]
#
# Installs PyYAML (pinned) into .venv-alarms the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

python_venv .venv-alarms pyyaml==6.0.3
exec .venv-alarms/bin/python alarms/alarm_tests.py "$@"
