#!/usr/bin/env bash
# The ops checks: cfn-lint and checkov on every CloudFormation template, actionlint on the workflows and
# ShellCheck on the deploy scripts, the dashboards/alarms/runbooks cross-checks against the relay's and
# canary's metric catalogs and log fields, the alarm and SLO behaviour tests (CloudWatch semantics, and
# promtool and a real Prometheus for the SLO rules), the incident drills, and every stack deployed into
# the local AWS-API server with its resources checked through the service APIs (pytest suite in
# infra/tests/).
#
#   bash scripts/ops-checks.sh [PYTEST ARGS...]
#
# Needs AWS_ENDPOINT_URL pointing at the local AWS-API server (scripts/test.sh exports it; alone:
# ./scripts/aws-local.sh install && eval "$(./scripts/aws-local.sh start)"). Installs its pinned tools
# into .venv-ops (infra/tests/requirements.txt); builds target/debug/relay and target/debug/healthcheck
# only when they are missing or older than their sources. Report: test-output/ops/junit.xml.
# A missing tool or server is a failure with a message, never a skip.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=.venv-ops
out=test-output/ops
requirements=infra/tests/requirements.txt

fail_status=2
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ -n "${AWS_ENDPOINT_URL:-}" ] || fail "AWS_ENDPOINT_URL is unset: these checks deploy the stacks into a local AWS-API server.
Start one first:
  ./scripts/aws-local.sh install && eval \"\$(./scripts/aws-local.sh start)\"
(scripts/test.sh does this); nothing here ever talks to a real AWS account."
case "$AWS_ENDPOINT_URL" in
  http://127.* | http://localhost* | http://\[::1\]*) ;;
  *) fail "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL is not a loopback address; refusing to deploy there" ;;
esac

started=$(date +%s)
# No __pycache__ next to infra/render.py and the tests.
export PYTHONDONTWRITEBYTECODE=1

# ---- tools (pinned; reinstalled only when the requirements change) -----------------------------------
python_venv "$venv" -r "$requirements" -r infra/requirements-deploy.txt
for bin in cfn-lint checkov actionlint shellcheck aws pytest; do
  [ -x "$venv/bin/$bin" ] || fail "$bin is missing from $venv after installing $requirements"
done
# promtool and a real Prometheus server for the SLO rules (Debian's package: it starts no service here).
need_command promtool prometheus
need_command prometheus prometheus

# ---- the binaries whose catalogs and log lines are checked ---------------------------------------------
stale() {
  [ ! -x "$1" ] || [ -n "$(find relay/src relay/Cargo.toml healthcheck/src healthcheck/Cargo.toml telemetry-core Cargo.lock \
                             -newer "$1" -print -quit 2>/dev/null)" ]
}
if stale target/debug/relay || stale target/debug/healthcheck; then
  echo "ops-checks: building relay and healthcheck (cargo build -p relay -p healthcheck)"
  cargo build -p relay -p healthcheck
fi

# ---- the suite -----------------------------------------------------------------------------------------
mkdir -p "$out"
status=0
RELAY_DEPLOY_VENV="$(pwd)/$venv" "$venv/bin/python" -m pytest infra/tests -p no:cacheprovider -q -rfE \
  --junitxml "$out/junit.xml" "$@" || status=$?
echo "ops-checks: finished in $(( $(date +%s) - started )) s (JUnit report: $out/junit.xml)"
exit "$status"
