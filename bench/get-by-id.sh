#!/usr/bin/env bash
# Question: what does the relay's telemetry cost, and how close is the relay to axum's ceiling?
# GET /messages/{id} on the relay (SQLite store, full telemetry: a JSON log line per request + Prometheus
# metrics) vs the same relay with telemetry off vs a bare axum hello-world built in the same run, side by
# side, interleaved over several rounds; in the same rounds, creates (POST /messages, committed) and
# counts (GET /messages) on the relay with full telemetry. Loopback only; about 3 minutes.
# Usage: bench/get-by-id.sh [SECONDS_PER_RUN (10)] [ROUNDS (3)]. Writes bench/results/get-by-id.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-10}
rounds=${2:-3}
need_wrk
start_hello_and_relays

post_lua "$work/post.lua"
declare -A urls=(
  [hello]="http://127.0.0.1:$p_hello/"
  [relay-telemetry-on]="http://127.0.0.1:$p_on/messages/$(create_message "$p_on")"
  [relay-telemetry-off]="http://127.0.0.1:$p_off/messages/$(create_message "$p_off")"
  [relay-create]="http://127.0.0.1:$p_on/messages"
  [relay-count]="http://127.0.0.1:$p_on/messages"
)
declare -A scripts=([relay-create]="-s $work/post.lua")
order=(hello relay-telemetry-on relay-telemetry-off relay-create relay-count)
for name in "${order[@]}"; do taskset -c 1 wrk -t1 -c32 -d2s ${scripts[$name]:-} "${urls[$name]}" >/dev/null; done  # warm-up
for round in $(seq 1 "$rounds"); do
  for name in "${order[@]}"; do
    taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency ${scripts[$name]:-} "${urls[$name]}" >"$work/$name.$round.txt"
    echo "round $round $name: $(wrk_summary "$work/$name.$round.txt")"
  done
done

python3 - "$work" "$rounds" "$duration" "$(machine)" > bench/results/get-by-id.md <<'PY'
import statistics, sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, rounds, duration, machine = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows, per_round = {}, {}
for name in ["hello", "relay-telemetry-on", "relay-telemetry-off", "relay-create", "relay-count"]:
    runs = [summary(f"{work}/{name}.{r}.txt") for r in range(1, rounds + 1)]
    per_round[name] = [run[0] for run in runs]
    rows[name] = [statistics.median(run[i] for run in runs) for i in range(3)] + [sum(run[3] for run in runs)]
print("# GET by id: relay vs bare axum, telemetry on vs off\n")
print(f"Measured {machine}. `bench/get-by-id.sh {duration} {rounds}`: release build, wrk 1 thread / 32 connections,")
print(f"{duration} s per run, {rounds} interleaved rounds, medians; servers on core 0, wrk on core 1; loopback.")
print("The relay uses the SQLite store with its read cache (the default). Telemetry on: one JSON info line per")
print("request (to a file) and Prometheus metrics; off: `RELAY_NO_TELEMETRY=1` (no request fields or log line, no recorder).")
print("relay-create is POST /messages (each 201 committed with `synchronous=FULL`) and relay-count is GET /messages,")
print("both on the telemetry-on relay.\n")
print("| server | requests/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
for name, (rps, p50, p99, errors) in rows.items():
    print(f"| {name} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {errors} |")
hello, on, off = rows["hello"][0], rows["relay-telemetry-on"][0], rows["relay-telemetry-off"][0]
print(f"\n- relay with full telemetry / bare axum hello-world: **{on / hello:.1%}** (bar: >= 70%)")
print(f"- telemetry overhead, 1 - on/off: **{1 - on / off:.1%}** (bar: <= 10%)")
print(f"- creates / hello-world: {rows['relay-create'][0] / hello:.1%}; counts / hello-world: {rows['relay-count'][0] / hello:.1%}")
# The spread: the same ratios round by round (each round runs the servers back to back).
by_round = lambda a, b: " ".join(f"{x / y:.0%}" for x, y in zip(per_round[a], per_round[b]))
print(f"\nRound by round, relay / hello-world: {by_round('relay-telemetry-on', 'hello')}; telemetry on / off: "
      f"{by_round('relay-telemetry-on', 'relay-telemetry-off')}; hello-world "
      f"{min(per_round['hello']):,.0f}-{max(per_round['hello']):,.0f} req/s.")
PY
cat bench/results/get-by-id.md
