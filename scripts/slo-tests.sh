#!/usr/bin/env bash
# SLO behaviour tests: the burn-rate alarms compiled from slos/relay.yaml, on the fixtures of slos/tests/,
# through CloudWatch's alarm semantics (alarms/cloudwatch.py) and through `promtool test rules` over
# alarms/prometheus/slo-rules.yaml; the two backends must agree (see slos/slo_tests.py). About 40 s.
#
#   scripts/slo-tests.sh [slos/tests/FILE.yaml...]
#
# Installs PyYAML (pinned) into .venv-alarms and Debian's prometheus package (for promtool) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

python_venv .venv-alarms pyyaml==6.0.3
need_command promtool prometheus
exec .venv-alarms/bin/python slos/slo_tests.py "$@"
