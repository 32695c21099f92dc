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

# count NAME COMMAND...: run COMMAND (a server on $p) under callgrind, with the environment settings in
# the array `settings`; writes "requests instructions" to $work/NAME.count.
count() {
  local name=$1
  local out="$work/$name.callgrind"
  shift
  env "${settings[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$@" \
    >"$work/$name.log" 2>"$work/$name.valgrind" &
  local server=$! target
  pids+=("$server")
  if [ "$name" = hello ]; then
    wait_up "http://127.0.0.1:$p/"
    target="http://127.0.0.1:$p/"
  else
    wait_up "http://127.0.0.1:$p/readyz"
    target="http://127.0.0.1:$p/messages/$(create_message "$p")"
  fi
  wrk -t1 -c8 -d2s "$target" >/dev/null
  callgrind_control -z "$server" >/dev/null
  wrk -t1 -c8 -d"${duration}s" "$target" >"$work/$name.wrk"
  callgrind_control -d "$server" >/dev/null
  kill "$server"
  wait "$server" 2>/dev/null || true
  local dump
  dump=$(printf "%s\n" "$out".* | head -1)
  echo "$(awk '/requests in/ {print $1}' "$work/$name.wrk") $(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')" \
    >"$work/$name.count"
  echo "$name: $(cat "$work/$name.count") (requests, instructions)"
}

p=$(free_port)
settings=(RUST_LOG=off)
count hello "$target_dir/release/examples/hello" "127.0.0.1:$p"
for name in relay-telemetry-on relay-telemetry-off; do
  p=$(free_port)
  settings=(RELAY_LISTEN="127.0.0.1:$p" RELAY_STORE="sqlite:$work/$name.db" RELAY_RATE_LIMIT=0)
  case $name in
    relay-telemetry-on) settings+=(RUST_LOG=info) ;;
    relay-telemetry-off) settings+=(RELAY_NO_TELEMETRY=1) ;;
  esac
  count "$name" "$relay"
done

python3 - "$work" "$duration" "$(machine)" > bench/results/instructions.md <<'PY'
import sys
work, duration, machine = sys.argv[1:4]
names = ["hello", "relay-telemetry-on", "relay-telemetry-off"]
per = {}
for name in names:
    requests, instructions = (int(x) for x in open(f"{work}/{name}.count").read().split())
    per[name] = (requests, instructions, instructions / requests)
print("# User-space instructions per GET by id\n")
print(f"Measured {machine}. `bench/instructions.sh {duration}`: release build under `valgrind --tool=callgrind`,")
print(f"counters zeroed after a 2 s warm-up and dumped after {duration} s of wrk (1 thread, 8 connections); all threads")
print("of the server process. Telemetry on: a JSON line per request (to a file) and Prometheus metrics; off:")
print("`RELAY_NO_TELEMETRY=1`.\n")
print("| server | requests | instructions | per request |\n|---|---:|---:|---:|")
for name in names:
    requests, instructions, each = per[name]
    print(f"| {name} | {requests:,} | {instructions:,} | {each:,.0f} |")
on, off, hello = (per[n][2] for n in names[1:] + names[:1])
print(f"\n- telemetry: **{on - off:,.0f}** instructions per request ({on / off - 1:.1%} more than telemetry off)")
print(f"- the relay with full telemetry executes {on / hello:.2f}x the hello-world's instructions per request")
PY
cat bench/results/instructions.md
