#!/usr/bin/env bash
# Question: what does the relay's telemetry cost, and how close is the relay to axum's ceiling?
# Measures GET /messages/{id} on the relay (SQLite store, full telemetry: JSON logs + Prometheus metrics)
# against the same relay with telemetry off, and against a bare axum hello-world built in the same run,
# side by side, interleaved over several rounds. Loopback only; bounded in time (about 2 minutes).
#
# Usage: bench/get-by-id.sh [SECONDS_PER_RUN (default 10)] [ROUNDS (default 3)]
# Writes bench/results/get-by-id.md.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10}
rounds=${2:-3}
connections=32
out=bench/results/get-by-id.md
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p relay --bin relay --example hello
target_dir=${CARGO_TARGET_DIR:-target}
relay=$target_dir/release/relay
hello=$target_dir/release/examples/hello

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

# Servers on core 0, the load generator on core 1, so they do not fight over one core.
p_hello=$(port); p_on=$(port); p_off=$(port)
taskset -c 0 "$hello" "127.0.0.1:$p_hello" >/dev/null 2>&1 & pids+=($!)
RELAY_LISTEN=127.0.0.1:$p_on RELAY_STORE=sqlite:$work/on.db RELAY_RATE_LIMIT=0 RUST_LOG=info \
  taskset -c 0 "$relay" >"$work/on.log" 2>&1 & pids+=($!)
RELAY_LISTEN=127.0.0.1:$p_off RELAY_STORE=sqlite:$work/off.db RELAY_RATE_LIMIT=0 RELAY_NO_TELEMETRY=1 \
  taskset -c 0 "$relay" >"$work/off.log" 2>&1 & pids+=($!)
wait_up "http://127.0.0.1:$p_hello/"; wait_up "http://127.0.0.1:$p_on/readyz"; wait_up "http://127.0.0.1:$p_off/readyz"

create() { curl -sf "http://127.0.0.1:$1/messages" -H 'content-type: application/json' \
  -d '{"message":"benchmark message of a typical size, about one hundred bytes long, plain ASCII text."}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
id_on=$(create "$p_on"); id_off=$(create "$p_off")

declare -A urls=(
  [hello]="http://127.0.0.1:$p_hello/"
  [relay-telemetry-on]="http://127.0.0.1:$p_on/messages/$id_on"
  [relay-telemetry-off]="http://127.0.0.1:$p_off/messages/$id_off"
)
order=(hello relay-telemetry-on relay-telemetry-off)
for name in "${order[@]}"; do wrk -t1 -c"$connections" -d2s "${urls[$name]}" >/dev/null; done  # warm-up

for round in $(seq 1 "$rounds"); do
  for name in "${order[@]}"; do
    taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" --latency "${urls[$name]}" >"$work/$name.$round.txt"
    echo "round $round $name: $(grep Requests/sec "$work/$name.$round.txt")"
  done
done

python3 - "$work" "$rounds" "$duration" "$connections" "$out" <<'PY'
import re, statistics, sys, platform, subprocess, datetime
work, rounds, duration, conns, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def unit(v):
    n, u = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]+", "", v)
    return n * {"us": 0.001, "ms": 1, "s": 1000}[u]
rows = {}
for name in ["hello", "relay-telemetry-on", "relay-telemetry-off"]:
    rps, p50, p99, errors = [], [], [], 0
    for r in range(1, rounds + 1):
        t = open(f"{work}/{name}.{r}.txt").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        p50.append(unit(re.search(r"\s50%\s+(\S+)", t).group(1)))
        p99.append(unit(re.search(r"\s99%\s+(\S+)", t).group(1)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
        errors += int(m.group(1)) if m else 0
    rows[name] = (statistics.median(rps), statistics.median(p50), statistics.median(p99), errors)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
h, on, off = rows["hello"][0], rows["relay-telemetry-on"][0], rows["relay-telemetry-off"][0]
lines = [
    "# GET by id: relay vs bare axum, telemetry on vs off",
    "",
    f"Measured {datetime.date.today()} on {cpu}, {subprocess.getoutput('nproc')} cores, {platform.system()} {platform.release()}.",
    f"`bench/get-by-id.sh {duration} {rounds}`: wrk, 1 thread, {conns} connections, {duration} s per run, {rounds} interleaved rounds,",
    "medians shown; servers pinned to core 0, wrk to core 1; release build; loopback.",
    "The relay uses the SQLite store with the read cache on (its default); telemetry on = JSON info log line",
    "per request (to a file) + Prometheus metrics; telemetry off = `RELAY_NO_TELEMETRY=1` (no request span, no recorder).",
    "",
    "| server | requests/s | p50 ms | p99 ms | non-2xx |",
    "|---|---:|---:|---:|---:|",
]
for name, (r, a, b, e) in rows.items():
    lines.append(f"| {name} | {r:,.0f} | {a:.3f} | {b:.3f} | {e} |")
lines += [
    "",
    f"- relay (telemetry on) / bare axum: **{on / h:.1%}** (bar: >= 70%)",
    f"- telemetry overhead (1 - on/off): **{1 - on / off:.1%}** (bar: <= 10%)",
    "",
]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
