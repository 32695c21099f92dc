#!/usr/bin/env bash
# Questions: how fast does the relay serve its first request after start, and how much memory does it use
# idle, after 100,000 stored messages, and under read load? Release build, SQLite store.
# Writes bench/results/startup-rss.md.
source "$(dirname "$0")/lib/common.sh"
need_wrk
build_relay
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

starts=()
for i in 1 2 3 4 5; do
  port=$(free_port)
  t0=$(date +%s%N)
  RELAY_LISTEN=127.0.0.1:$port RELAY_STORE=sqlite:$work/start$i.db RUST_LOG=warn "$relay" >/dev/null 2>&1 &
  pid=$!; pids+=("$pid")
  until curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.001; done
  t1=$(date +%s%N)
  starts+=($(( (t1 - t0) / 1000000 )))
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

port=$(free_port)
RELAY_LISTEN=127.0.0.1:$port RELAY_STORE=sqlite:$work/rss.db RELAY_RATE_LIMIT=0 RUST_LOG=warn \
  taskset -c 0 "$relay" >/dev/null 2>&1 & pid=$!; pids+=("$pid")
wait_up "http://127.0.0.1:$port/readyz"; sleep 1
idle=$(rss_kib "$pid")
post_lua "$work/post.lua"
# Store at least 100,000 messages (creates do not fill the read cache; reads do).
until [ "$(curl -s "http://127.0.0.1:$port/messages" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')" -ge 100000 ]; do
  taskset -c 1 wrk -t1 -c64 -d5s -s "$work/post.lua" "http://127.0.0.1:$port/messages" >/dev/null
done
stored=$(curl -s "http://127.0.0.1:$port/messages")
after_writes=$(rss_kib "$pid")
id=$(create_message "$port")
taskset -c 1 wrk -t1 -c64 -d10s "http://127.0.0.1:$port/messages/$id" >/dev/null & load=$!
sleep 5; under_load=$(rss_kib "$pid"); wait "$load"
python3 - "$(machine)" "${starts[*]}" "$idle" "$after_writes" "$under_load" "$stored" > bench/results/startup-rss.md <<'PY'
import statistics, sys
machine, starts, idle, writes, load, stored = sys.argv[1:7]
starts = [int(s) for s in starts.split()]
mib = lambda kib: f"{int(kib) / 1024:.1f} MiB"
print("# Startup time and memory\n")
print(f"Measured {machine}. `bench/startup-rss.sh`: release build, SQLite store.\n")
print("| what | value |\n|---|---:|")
print(f"| process start to first `/healthz` answer (median of 5, fresh database) | {statistics.median(starts)} ms (runs: {', '.join(map(str, starts))}) |")
print(f"| RSS idle | {mib(idle)} |")
print(f"| RSS after storing 100,000+ messages ({stored}) | {mib(writes)} |")
print(f"| RSS during GET-by-id load (64 connections) | {mib(load)} |")
print("\nThe read cache holds at most `--cache-max-bytes` (64 MiB by default), counting per entry the text,")
print("its rendered JSON and a 400-byte allowance for the entry itself.")
PY
cat bench/results/startup-rss.md
