#!/usr/bin/env bash
# Question: what does the relay's telemetry cost, and how close is the relay to axum's ceiling?
# GET /messages/{id} on the relay (SQLite store, full telemetry: a JSON log line per request to a file +
# Prometheus metrics) vs the same relay with telemetry off vs a bare axum hello-world built in the same
# run, one at a time, over several rounds; in the same rounds, creates (POST /messages, committed) and
# counts (GET /messages) on the relay with full telemetry. Every round starts fresh processes and rotates
# the order of the three GET runs; the ratios are taken within each round. Loopback only; about 5 minutes.
# Usage: bench/get-by-id.sh [SECONDS_PER_RUN (5)] [ROUNDS (10)]. Writes bench/results/get-by-id.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-5}
rounds=${2:-10}
need_wrk
build_get_servers
post_lua "$work/post.lua"

gets=(hello relay-telemetry-on relay-telemetry-off)
for round in $(seq 1 "$rounds"); do
  for name in "${gets[@]}"; do start_server "$name" "$round"; done
  for name in "${gets[@]}"; do taskset -c 1 wrk -t1 -c32 -d1s "${url[$name]}" >/dev/null; done  # warm-up
  for name in $(rotate $((round - 1)) "${gets[@]}"); do
    taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency "${url[$name]}" >"$work/$name.$round.txt"
    echo "round $round $name: $(wrk_summary "$work/$name.$round.txt")"
  done
  # Every request of the telemetry-on run was logged: lines written per request served so far.
  served=$(curl -s "http://127.0.0.1:${port[relay-telemetry-on]}/metrics" \
    | awk '/^relay_http_requests_total/ {n += $NF} END {printf "%d", n}')
  sleep 0.2  # the log writer writes out within 50 ms
  lines=$(grep -c '"message":"Request finished."' "$work/relay-telemetry-on.log" || true)
  echo "$lines $served" >"$work/logged.$round.txt"
  on=${port[relay-telemetry-on]}
  taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$work/post.lua" "http://127.0.0.1:$on/messages" \
    >"$work/relay-create.$round.txt"
  taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency "http://127.0.0.1:$on/messages" >"$work/relay-count.$round.txt"
  echo "round $round creates: $(wrk_summary "$work/relay-create.$round.txt"); counts: $(wrk_summary "$work/relay-count.$round.txt")"
  stop_servers "${gets[@]}"
done

python3 - "$work" "$rounds" "$duration" "$(machine)" > bench/results/get-by-id.md <<'PY'
import statistics, sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, rounds, duration, machine = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
names = ["hello", "relay-telemetry-on", "relay-telemetry-off", "relay-create", "relay-count"]
runs = {n: [summary(f"{work}/{n}.{r}.txt") for r in range(1, rounds + 1)] for n in names}
rps = {n: [run[0] for run in runs[n]] for n in names}

def spread(values, fmt):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"**{fmt(statistics.median(values))}** (middle half {fmt(q[0])} to {fmt(q[2])}; all rounds {fmt(min(values))} to {fmt(max(values))})"

pct = lambda x: f"{x:.1%}"
relay_share = [on / hello for on, hello in zip(rps["relay-telemetry-on"], rps["hello"])]
overhead = [1 - on / off for on, off in zip(rps["relay-telemetry-on"], rps["relay-telemetry-off"])]
logged = [tuple(int(x) for x in open(f"{work}/logged.{r}.txt").read().split()) for r in range(1, rounds + 1)]
print("# GET by id: relay vs bare axum, telemetry on vs off\n")
print(f"Measured {machine}. `bench/get-by-id.sh {duration} {rounds}`: release build, wrk 1 thread / 32 connections,")
print(f"{duration} s per run; {rounds} rounds, each with fresh server processes and the three GET runs in rotated order;")
print("servers on core 0, wrk on core 1; loopback. The relay uses the SQLite store with its read cache (the default).")
print("Telemetry on: one JSON info line per request (to a file) and Prometheus metrics; off: `RELAY_NO_TELEMETRY=1`")
print("(no request fields or log line, no recorder). relay-create is POST /messages (each 201 committed with")
print("`synchronous=FULL`) and relay-count is GET /messages, both on the telemetry-on relay.\n")
print("| server | requests/s (median) | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
for n in names:
    med = lambda i: statistics.median(run[i] for run in runs[n])
    print(f"| {n} | {med(0):,.0f} | {med(1):.3f} | {med(2):.3f} | {sum(run[3] for run in runs[n])} |")
print("\nRatios are taken within each round (the servers ran back to back), then summarised over the rounds:\n")
print(f"- relay with full telemetry / bare axum hello-world: {spread(relay_share, pct)} (bar: >= 70%)")
print(f"- telemetry overhead, 1 - on/off: {spread(overhead, pct)} (bar: <= 10%)")
print(f"- creates / hello-world: {statistics.median(c / h for c, h in zip(rps['relay-create'], rps['hello'])):.1%}; "
      f"counts / hello-world: {statistics.median(c / h for c, h in zip(rps['relay-count'], rps['hello'])):.1%}")
print(f"- hello-world moved between {min(rps['hello']):,.0f} and {max(rps['hello']):,.0f} req/s over the rounds")
print(f"- the telemetry-on relay wrote a `Request finished.` line for every request: "
      f"{sum(l for l, _ in logged):,} lines for {sum(s for _, s in logged):,} requests counted by its metrics")
print("\n| round | relay / hello | telemetry overhead |\n|---:|---:|---:|")
for r, (share, cost) in enumerate(zip(relay_share, overhead), 1):
    print(f"| {r} | {share:.1%} | {cost:.1%} |")
PY
cat bench/results/get-by-id.md
