#!/usr/bin/env bash
# The canary against a relay on this machine, end to end through the real binaries: start
# target/debug/relay on a free loopback port (temporary SQLite store, rate limiting off), wait for
# /healthz, run target/debug/healthcheck with every report and --cloudwatch, stop the relay, and exit
# with the canary's exit code (0 only when every probe passed within its budget).
#
#   bash scripts/canary-local.sh
#
# Needs AWS_ENDPOINT_URL (the local AWS-API server: `eval "$(scripts/aws-local.sh start)"`;
# scripts/test.sh exports it), so the metrics never go to a real AWS account by accident.
# Builds the two binaries when they are missing or older than their sources.
# Reports: test-output/canary/{report.md,report.json,junit.xml}; the relay's log: relay.log there.
# With GITHUB_STEP_SUMMARY set, the Markdown report is appended to the CI step summary.
set -euo pipefail

cd "$(dirname "$0")/.."
out=test-output/canary
relay_bin=target/debug/relay
canary_bin=target/debug/healthcheck

fail_status=2
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ -n "${AWS_ENDPOINT_URL:-}" ] || fail "AWS_ENDPOINT_URL is unset: start the local AWS-API server first with
  ./scripts/aws-local.sh install && eval \"\$(./scripts/aws-local.sh start)\"
(the canary publishes its metrics there; this script never publishes to a real AWS account)"

# Stale or missing binaries: build them (a no-op for cargo when `cargo test` just built them).
stale() {
  [ ! -x "$1" ] || [ -n "$(find relay/src relay/Cargo.toml healthcheck/src healthcheck/Cargo.toml telemetry-core Cargo.lock \
                             -newer "$1" -print -quit 2>/dev/null)" ]
}
if stale "$relay_bin" || stale "$canary_bin"; then
  echo "canary-local: building relay and healthcheck"
  cargo build -p relay -p healthcheck
fi

mkdir -p "$out"
rm -f "$out/report.md" "$out/report.json" "$out/junit.xml"
store_dir=$(mktemp -d)
relay_pid=""
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  rm -rf "$store_dir"
}
trap cleanup EXIT

port=$(free_port)
target="http://127.0.0.1:$port"

RELAY_LISTEN="127.0.0.1:$port" RELAY_STORE="sqlite:$store_dir/relay.db" RELAY_RATE_LIMIT=0 \
  "$relay_bin" >"$out/relay.log" 2>&1 &
relay_pid=$!

wait_http "$target/healthz" 10 "$relay_pid" || fail "the relay did not start; see $out/relay.log"
echo "canary-local: relay $relay_pid on $target (store $store_dir/relay.db)"

status=0
"$canary_bin" --target "$target" --stage local \
  --report-md "$out/report.md" --report-json "$out/report.json" --junit "$out/junit.xml" \
  --cloudwatch || status=$?

kill "$relay_pid" 2>/dev/null || true
wait "$relay_pid" 2>/dev/null || true
relay_pid=""

if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$out/report.md" ]; then
  cat "$out/report.md" >>"$GITHUB_STEP_SUMMARY"
fi

if [ "$status" -eq 0 ]; then
  echo "canary-local: all probes passed; reports in $out/"
else
  echo "canary-local: the canary exited $status; reports in $out/" >&2
fi
exit "$status"
