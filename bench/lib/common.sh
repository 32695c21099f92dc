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

need_wrk() {
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
    || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
}
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
