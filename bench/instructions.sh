#!/usr/bin/env bash
# Question: how many user-space instructions does one GET /messages/{id} execute, with telemetry on and
# off, and a bare axum hello-world's GET? Counted, not timed: each server runs under callgrind (valgrind),
# its counters are zeroed after a warm-up and dumped after a fixed load, and the count is divided by the
# requests served. The count repeats within about half a percent from run to run whatever else the
# machine does, so it shows small changes that timing on a shared VM cannot; it misses the kernel and
# the caches (the CPU figures of bench/cpu-per-request.sh decide the bars). Loopback only; about 1 minute.
# Usage: bench/instructions.sh [SECONDS_OF_LOAD (8)]. Writes bench/results/instructions.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-8}
need_wrk
need_tool valgrind valgrind
need_tool callgrind_control valgrind
build_get_servers

# count NAME: run server NAME under callgrind; writes "requests instructions" to $work/NAME.count.
count() {
  local name=$1
  local out="$work/$name.callgrind"
  start_server "$name" 1 valgrind --tool=callgrind --callgrind-out-file="$out"
  wrk -t1 -c8 -d2s "${url[$name]}" >/dev/null
  callgrind_control -z "${pid[$name]}" >/dev/null
  wrk -t1 -c8 -d"${duration}s" "${url[$name]}" >"$work/$name.wrk"
  callgrind_control -d "${pid[$name]}" >/dev/null
  stop_servers "$name"
  local dump
  dump=$(printf "%s\n" "$out".* | head -1)
  echo "$(awk '/requests in/ {print $1}' "$work/$name.wrk") $(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')" \
    >"$work/$name.count"
  echo "$name: $(cat "$work/$name.count") (requests, instructions)"
}

for name in hello relay-telemetry-on relay-telemetry-off relay-log-buffer; do count "$name"; done

python3 - "$work" "$duration" "$(machine)" > bench/results/instructions.md <<'PY'
import sys
work, duration, machine = sys.argv[1:4]
names = ["hello", "relay-telemetry-on", "relay-telemetry-off", "relay-log-buffer"]
per = {}
for name in names:
    requests, instructions = (int(x) for x in open(f"{work}/{name}.count").read().split())
    per[name] = (requests, instructions, instructions / requests)
print("# User-space instructions per GET by id\n")
print(f"Measured {machine}. `bench/instructions.sh {duration}`: release build under `valgrind --tool=callgrind`,")
print(f"counters zeroed after a 2 s warm-up and dumped after {duration} s of wrk (1 thread, 8 connections); all threads")
print("of the server process. Telemetry on: a JSON line per request (to a file) and Prometheus metrics; off:")
print("`RELAY_NO_TELEMETRY=1`; relay-log-buffer: telemetry on with `RELAY_LOG_BUFFER=debug`.\n")
print("| server | requests | instructions | per request |\n|---|---:|---:|---:|")
for name in names:
    requests, instructions, each = per[name]
    print(f"| {name} | {requests:,} | {instructions:,} | {each:,.0f} |")
hello, on, off, buffer = (per[n][2] for n in names)
print(f"\n- telemetry: **{on - off:,.0f}** instructions per request ({on / off - 1:.1%} more than telemetry off)")
print(f"- the debug buffer (`RELAY_LOG_BUFFER=debug`, each request's debug lines recorded, kept, then dropped): "
      f"**{buffer - on:,.0f}** instructions per request ({buffer / on - 1:.1%} more than telemetry on)")
print(f"- the relay with full telemetry executes {on / hello:.2f}x the hello-world's instructions per request")
PY
cat bench/results/instructions.md
