#!/usr/bin/env bash
# A local AWS-API server for tests: moto in server mode (DynamoDB, CloudWatch, ... on one port),
# with request handling serialized (scripts/moto_serialized.py).
#
#   scripts/aws-local.sh install      create .venv-tools with the pinned tools (idempotent)
#   eval "$(scripts/aws-local.sh start)"   start moto on a free loopback port; prints the env to export
#   scripts/aws-local.sh stop         stop the server started by `start` (by its recorded PID)
#
# Exports: AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# RELAY_AWS_LOCAL_PID. Credentials are dummies: moto accepts any.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=.venv-tools
pidfile=test-output/aws-local.pid
logfile=test-output/aws-local.log
moto_version=5.2.5

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

install() { python_venv "$venv" "moto[server]==$moto_version"; }

start() {
  [ -x "$venv/bin/moto_server" ] || fail "moto is not installed: run scripts/aws-local.sh install"
  mkdir -p test-output
  local port
  port=$(free_port)
  # Serialized: see scripts/moto_serialized.py for why.
  "$venv/bin/python" scripts/moto_serialized.py 127.0.0.1 "$port" >"$logfile" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  if ! wait_http "http://127.0.0.1:$port/moto-api/" 10 "$pid"; then
    kill "$pid" 2>/dev/null || true
    fail "moto did not start on port $port; see $logfile"
  fi
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-west-2
export AWS_DEFAULT_REGION=us-west-2
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export RELAY_AWS_LOCAL_PID=$pid
ENV
}

stop() {
  # The PID this shell's `start` exported wins over the shared file, so concurrent runs on one machine
  # stop their own server.
  local pid=${RELAY_AWS_LOCAL_PID:-}
  if [ -z "$pid" ] && [ -f "$pidfile" ]; then pid=$(cat "$pidfile"); fi
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  if [ -f "$pidfile" ] && [ "$(cat "$pidfile")" = "$pid" ]; then rm -f "$pidfile"; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) fail "usage: $0 install|start|stop" ;;
esac
