#!/usr/bin/env bash
# Question: how many creates per second does the embedded store commit? POST /messages with wrk on the
# SQLite store (WAL, synchronous=FULL: every 201 is on disk; concurrent writes share one fsync through
# group commit), at 1 and at 64 connections. Writes bench/results/creates.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-10}
need_wrk
build_relay
port=$(free_port)
RELAY_LISTEN=127.0.0.1:$port RELAY_STORE=sqlite:$work/relay.db RELAY_RATE_LIMIT=0 RUST_LOG=warn \
  taskset -c 0 "$relay" >"$work/relay.log" 2>&1 & pids+=($!)
wait_up "http://127.0.0.1:$port/readyz"
post_lua "$work/post.lua"
for c in 1 64; do
  taskset -c 1 wrk -t1 -c"$c" -d"${duration}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/messages" >"$work/c$c.txt"
  echo "$c connections: $(wrk_summary "$work/c$c.txt")"
done
count=$(curl -s "http://127.0.0.1:$port/messages")
fs=$(df -T "$work" | awk 'NR==2 {print $2}')
python3 - "$work" "$duration" "$(machine)" "$count" "$fs" > bench/results/creates.md <<'PY'
import sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, duration, machine, count, fs = sys.argv[1:6]
print("# Creates per second on the embedded store\n")
print(f"Measured {machine}; database on {fs}. `bench/creates.sh {duration}`: release build, SQLite in WAL mode with")
print("`synchronous=FULL` (a 201 is sent only after its transaction's fsync), group commit of concurrent writes;")
print(f"wrk 1 thread, {duration} s per run; relay on core 0, wrk on core 1.\n")
print("| connections | creates/s | p50 ms | p99 ms | non-2xx |\n|---:|---:|---:|---:|---:|")
for c in (1, 64):
    rps, p50, p99, errors = summary(f"{work}/c{c}.txt")
    print(f"| {c} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {errors} |")
print(f"\nAfter the runs `GET /messages` answered `{count}`.")
PY
cat bench/results/creates.md
