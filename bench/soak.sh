#!/usr/bin/env bash
# Question: does the relay stay healthy under hours-like load? A flagged, minutes-long run (default 10
# minutes) of a mixed workload: creates, reads of stored messages, counts, in one wrk run against the
# release build (SQLite store, full telemetry, a 16 MiB read cache so it fills early). RSS is sampled
# every 5 s. Fails (exit 1) on any error answer, or when RSS grows by more than 25% between the end of
# the first quarter (cache full, SQLite warmed) and the end. Writes bench/results/soak.md.
# Usage: bench/soak.sh [MINUTES (10)].
source "$(dirname "$0")/lib/common.sh"
minutes=${1:-10}
need_wrk
build_relay
port=$(free_port)
RELAY_LISTEN=127.0.0.1:$port RELAY_STORE=sqlite:$work/soak.db RELAY_RATE_LIMIT=0 RUST_LOG=info \
  RELAY_CACHE_MAX_BYTES=$((16 * 1024 * 1024)) taskset -c 0 "$relay" >"$work/relay.log" 2>&1 &
pid=$!; pids+=("$pid")
wait_up "http://127.0.0.1:$port/readyz"

# 100 stored messages to read back; then every connection cycles create, read, read, count.
for _ in $(seq 1 100); do create_message "$port"; done >"$work/ids"
{
  echo 'local ids = {'
  sed 's/.*/  "&",/' "$work/ids"
  cat <<LUA
}
local n = 0
request = function()
  n = n + 1
  local step = n % 4
  if step == 0 then
    return wrk.format("POST", "/messages", {["content-type"] = "application/json"},
      '{"message":"$bench_text"}')
  elseif step == 3 then
    return wrk.format("GET", "/messages")
  end
  return wrk.format("GET", "/messages/" .. ids[(n % #ids) + 1])
end
LUA
} >"$work/mixed.lua"

seconds=$((minutes * 60))
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
( for _ in $(seq 1 $((seconds / 5))); do sleep 5; echo "$(date +%s) $(rss_kib)"; done ) >"$work/rss" &
sampler=$!
taskset -c 1 wrk -t1 -c32 -d"${seconds}s" --latency -s "$work/mixed.lua" "http://127.0.0.1:$port" >"$work/wrk.txt"
wait "$sampler" || true
count=$(curl -sf "http://127.0.0.1:$port/messages")
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
errors_logged=$(grep -c '"level":"ERROR"' "$work/relay.log" || true)

status=0
python3 - "$work" "$minutes" "$(machine)" "$count" "$ready" "$errors_logged" > bench/results/soak.md <<'PY' || status=$?
import sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, minutes, machine, count, ready, errors_logged = sys.argv[1:7]
rps, p50, p99, errors = summary(f"{work}/wrk.txt")
samples = [int(line.split()[1]) for line in open(f"{work}/rss") if len(line.split()) == 2]
quarter = samples[len(samples) // 4]
growth = samples[-1] / quarter - 1
ok = errors == 0 and int(errors_logged) == 0 and ready == "200" and growth <= 0.25
print("# Soak: mixed load for minutes\n")
print(f"Measured {machine}. `bench/soak.sh {minutes}`: release build, SQLite store, full telemetry, 16 MiB read")
print("cache; wrk 1 thread / 32 connections cycling create, read, read, count; relay on core 0, wrk on core 1.\n")
print(f"- {minutes} min at {rps:,.0f} requests/s (p50 {p50:.3f} ms, p99 {p99:.3f} ms); error answers: **{errors}**;")
print(f"  error lines in the relay's log: **{errors_logged}**; `/readyz` after: {ready}; `GET /messages` after: `{count}`.")
print(f"- RSS: {samples[0] / 1024:.1f} MiB at 5 s, {quarter / 1024:.1f} MiB at the end of the first quarter, "
      f"{samples[-1] / 1024:.1f} MiB at the end, max {max(samples) / 1024:.1f} MiB: growth after the first quarter "
      f"**{growth:+.1%}** (bound: 25%).")
print(f"\nResult: **{'pass' if ok else 'FAIL'}**.")
sys.exit(0 if ok else 1)
PY
cat bench/results/soak.md
exit $status
