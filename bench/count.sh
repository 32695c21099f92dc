#!/usr/bin/env bash
# Question: does GET /messages stay O(1)? Latency of the count at 10 messages vs 1,000,000 (SQLite store,
# release build), measured side by side with wrk. The million rows are bulk-loaded with the sqlite3 CLI
# into the relay's own schema (the count is what is measured, not the loading). Writes bench/results/count.md.
source "$(dirname "$0")/lib/common.sh"
need_wrk
need_tool sqlite3 sqlite3
build_relay
duration=${1:-10}

start() { # start NAME DB -> sets PORT and PID
  PORT=$(free_port)
  RELAY_LISTEN=127.0.0.1:$PORT RELAY_STORE=sqlite:$2 RELAY_RATE_LIMIT=0 RUST_LOG=warn \
    taskset -c 0 "$relay" >"$work/$1.log" 2>&1 &
  PID=$!; pids+=("$PID"); wait_up "http://127.0.0.1:$PORT/readyz"
}
load() { # load DB N: N messages through SQL, with the counter kept in step
  sqlite3 "$1" <<SQL
PRAGMA journal_mode=WAL;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
INSERT INTO messages (id, body, created_at, updated_at, expires_at, revision)
  SELECT randomblob(16), 'benchmark message ' || i, 1764000000000000, 1764000000000000, NULL, 1 FROM n;
UPDATE counters SET value = (SELECT COUNT(*) FROM messages) WHERE name = 'messages';
SQL
}
# Create both schemas by starting the relay once on each database, then stop and load.
for n in 10 1000000; do
  start "init-$n" "$work/$n.db"; kill "$PID"; wait "$PID" 2>/dev/null || true
  t0=$(date +%s.%N); load "$work/$n.db" "$n"; t1=$(date +%s.%N)
  echo "loaded $n messages in $(python3 -c "print(round($t1-$t0,1))") s"
done
start small "$work/10.db"; p10=$PORT
start big "$work/1000000.db"; pbig=$PORT
echo "count at 10: $(curl -s "http://127.0.0.1:$p10/messages"); at 1M: $(curl -s "http://127.0.0.1:$pbig/messages")"
for round in 1 2 3; do
  for name in small big; do
    port=$p10; [ "$name" = big ] && port=$pbig
    taskset -c 1 wrk -t1 -c16 -d"${duration}s" --latency "http://127.0.0.1:$port/messages" >"$work/$name.$round.txt"
  done
done
python3 - "$work" "$(machine)" "$duration" > bench/results/count.md <<'PY'
import statistics, sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, machine, duration = sys.argv[1:4]
rows = {}
for name in ["small", "big"]:
    s = [summary(f"{work}/{name}.{r}.txt") for r in (1, 2, 3)]
    rows[name] = [statistics.median(x[i] for x in s) for i in range(3)]
small, big = rows["small"], rows["big"]
print("# GET /messages at 10 vs 1,000,000 messages\n")
print(f"Measured {machine}. `bench/count.sh {duration}`: release build, SQLite store, wrk 1 thread / 16 connections,")
print(f"{duration} s per run, 3 interleaved rounds, medians; relay on core 0, wrk on core 1.\n")
print("| messages | requests/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|")
print(f"| 10 | {small[0]:,.0f} | {small[1]:.3f} | {small[2]:.3f} |")
print(f"| 1,000,000 | {big[0]:,.0f} | {big[1]:.3f} | {big[2]:.3f} |")
print(f"\np50 at 1M / p50 at 10: **{big[1] / small[1]:.2f}x**; p99 ratio {big[2] / small[2]:.2f}x (bar: within 1.2x).")
print("The count is one row read (a counter kept in the same transaction as each create and delete).")
PY
cat bench/results/count.md
