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
# need_cargo_lambda: cargo-lambda (PyPI, pinned) on PATH, from a cached virtualenv when missing.
cargo_lambda_version=1.9.2
need_cargo_lambda() {
  command -v cargo-lambda >/dev/null && return 0
  local venv=${RELAY_BENCH_VENV:-$HOME/.cache/relayops-bench-venv}
  [ -x "$venv/bin/cargo-lambda" ] || { python3 -m venv "$venv" \
    && "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$cargo_lambda_version"; } \
    || { echo "pip could not install cargo-lambda $cargo_lambda_version" >&2; exit 1; }
  export PATH="$venv/bin:$PATH"
}
# need_otlp_sink: start bench/lib/otlp_sink.py (opentelemetry-proto from PyPI, the pins of
# infra/tests/requirements.txt, in a cached virtualenv) on core 1 beside the load generators; sets
# otlp_endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT); otlp_spans prints the spans it has received so far.
need_otlp_sink() {
  local venv=$HOME/.cache/relayops-bench-otlp port
  python_venv "$venv" opentelemetry-proto==1.45.2 protobuf==7.36.2
  port=$(free_port)
  taskset -c 1 "$venv/bin/python" bench/lib/otlp_sink.py "$port" &
  pids+=($!)
  otlp_endpoint="http://127.0.0.1:$port"
  wait_up "$otlp_endpoint/spans"
}
otlp_spans() { curl -sf "$otlp_endpoint/spans"; }
build_relay() { cargo build --release -q -p relay --bin relay "$@"; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
wait_up() { wait_http "$1" 30 || exit 1; }
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

# The servers the GET-by-id benchmarks compare, by name (each on core 0; the load generator goes on core
# 1, so servers and load do not fight over one core):
#   hello               the bare axum hello-world (relay/examples/hello.rs), GET /
#   relay-telemetry-on  the relay (SQLite, rate limiting off) with full telemetry: a JSON line per request
#                       to a file, Prometheus metrics; GET /messages/{id}
#   relay-telemetry-off the same relay with RELAY_NO_TELEMETRY=1 (no log lines, no metrics recorder)
#   relay-control       a second telemetry-off relay: its ratio to relay-telemetry-off shows what the
#                       method itself reads into two identical servers
#   relay-log-buffer    relay-telemetry-on with the debug buffer on (RELAY_LOG_BUFFER=debug): each request
#                       records and keeps its debug lines, then drops them (the GETs all succeed, quickly)
#   relay-otel          relay-telemetry-on exporting every request's spans (OTEL_TRACES_SAMPLER=always_on)
#                       over OTLP/HTTP to the sink of need_otlp_sink
#   relay-otel-sampled  the same at the stacks' default ratio, 5% of the requests (parentbased_traceidratio)
#   relay-baseline      another build of the relay ($RELAY_BASELINE, e.g. the last release), for
#                       before/after figures in the same run, set up as $RELAY_BASELINE_AS is (one of
#                       the relay names above; default relay-telemetry-on)
# Benchmarks start fresh processes every round: where the allocator and the loader put things differs
# from one process to the next, and moves one process's figures by a few percent for its whole life.
build_get_servers() { build_relay --example hello; }

declare -A port pid url
# start_server NAME ROUND [LAUNCHER...]: start server NAME on core 0 (through LAUNCHER, e.g. valgrind,
# when given) and store one message in it; sets port[NAME], pid[NAME] and url[NAME] (what the benchmark
# GETs). Returns once it answers. The telemetry-on relay's log goes to $work/NAME.log.
start_server() {
  local name=$1 round=$2
  shift 2
  local launch=(taskset -c 0 "$@") out=/dev/null settings=() binary=$relay setup=$name
  port[$name]=$(free_port)
  if [ "$name" = relay-baseline ]; then
    binary=${RELAY_BASELINE:?set RELAY_BASELINE to a relay binary}
    setup=${RELAY_BASELINE_AS:-relay-telemetry-on}
    case $setup in hello | relay-baseline) echo "RELAY_BASELINE_AS=$setup is not a relay set-up" >&2; exit 1 ;; esac
  fi
  case $setup in
    hello) launch+=("$target_dir/release/examples/hello" "127.0.0.1:${port[$name]}") ;;
    relay-telemetry-on) settings=(RUST_LOG=info); out=$work/$name.log ;;
    relay-log-buffer) settings=(RUST_LOG=info RELAY_LOG_BUFFER=debug); out=$work/$name.log ;;
    relay-otel) settings=(RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT="${otlp_endpoint:?call need_otlp_sink}"
                          OTEL_TRACES_SAMPLER=always_on); out=$work/$name.log ;;
    relay-otel-sampled) settings=(RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT="${otlp_endpoint:?call need_otlp_sink}"
                                  OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.05)
                        out=$work/$name.log ;;
    relay-telemetry-off | relay-control) settings=(RELAY_NO_TELEMETRY=1) ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  if [ "$name" = hello ]; then
    "${launch[@]}" >/dev/null 2>&1 &
  else
    env RELAY_LISTEN="127.0.0.1:${port[$name]}" RELAY_STORE="sqlite:$work/$name.$round.db" RELAY_RATE_LIMIT=0 \
      "${settings[@]}" "${launch[@]}" "$binary" >"$out" 2>&1 &
  fi
  pid[$name]=$!; pids+=("${pid[$name]}")
  if [ "$name" = hello ]; then
    wait_up "http://127.0.0.1:${port[$name]}/"
    url[$name]="http://127.0.0.1:${port[$name]}/"
  else
    wait_up "http://127.0.0.1:${port[$name]}/readyz"
    url[$name]="http://127.0.0.1:${port[$name]}/messages/$(create_message "${port[$name]}")"
  fi
}
# stop_servers NAME...: stop them and remove their databases and logs.
stop_servers() {
  local name
  for name in "$@"; do kill "${pid[$name]}" 2>/dev/null || true; wait "${pid[$name]}" 2>/dev/null || true; done
  rm -f "$work"/*.db "$work"/*.db-* "$work"/*.log
}
# rotate N WORD...: the words rotated left by N (so each server takes each place in turn over the rounds).
rotate() { local n=$1; shift; local words=("$@"); n=$((n % ${#words[@]})); echo "${words[@]:n}" "${words[@]:0:n}"; }
