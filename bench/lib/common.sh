# Shared helpers for the bench/ scripts (sourced, not run). Loopback only; every server started here is
# stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

target_dir=${CARGO_TARGET_DIR:-target}
relay=$target_dir/release/relay
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# need_tool COMMAND PACKAGE: install PACKAGE from apt when COMMAND is missing, else fail saying so.
need_tool() {
  command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; } \
    || { echo "$1 is needed (apt-get install $2)" >&2; exit 1; }
}
need_wrk() { need_tool wrk wrk; }
build_relay() { cargo build --release -q -p relay --bin relay "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
machine() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
  echo "$(date -u +%F) on $cpu, $(nproc) cores, $(uname -sr)"
}
# wrk_summary FILE -> "rps p50_ms p99_ms non2xx"
wrk_summary() { python3 bench/lib/wrk.py "$1"; }

# The message every benchmark stores: a typical size, about one hundred bytes of plain ASCII.
bench_text="benchmark message of a typical size, about one hundred bytes long, plain ASCII text."
# create_message PORT: store bench_text on the relay at PORT; prints the new message's id.
create_message() {
  curl -sf "http://127.0.0.1:$1/messages" -H 'content-type: application/json' \
    -d "{\"message\":\"$bench_text\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
# post_lua FILE: a wrk script that POSTs bench_text to /messages.
post_lua() {
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"message":"$bench_text"}'
LUA
}

# start_hello_and_relays: build and start, on core 0, the bare axum hello-world and two relays (SQLite,
# rate limiting off): full telemetry and `RELAY_NO_TELEMETRY`. Sets p_hello/p_on/p_off (ports) and
# pid_hello/pid_on/pid_off, and returns once all three answer. The load generator goes on core 1, so
# servers and load do not fight over one core.
start_hello_and_relays() {
  build_relay --example hello
  local hello=$target_dir/release/examples/hello
  p_hello=$(free_port); p_on=$(free_port); p_off=$(free_port)
  taskset -c 0 "$hello" "127.0.0.1:$p_hello" >/dev/null 2>&1 & pid_hello=$!; pids+=($pid_hello)
  RELAY_LISTEN=127.0.0.1:$p_on RELAY_STORE=sqlite:$work/on.db RELAY_RATE_LIMIT=0 RUST_LOG=info \
    taskset -c 0 "$relay" >"$work/on.log" 2>&1 & pid_on=$!; pids+=($pid_on)
  RELAY_LISTEN=127.0.0.1:$p_off RELAY_STORE=sqlite:$work/off.db RELAY_RATE_LIMIT=0 RELAY_NO_TELEMETRY=1 \
    taskset -c 0 "$relay" >"$work/off.log" 2>&1 & pid_off=$!; pids+=($pid_off)
  wait_up "http://127.0.0.1:$p_hello/"; wait_up "http://127.0.0.1:$p_on/readyz"; wait_up "http://127.0.0.1:$p_off/readyz"
}
