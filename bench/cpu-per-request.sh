#!/usr/bin/env bash
# Question: how much server CPU does one GET /messages/{id} cost: relay with full telemetry, relay with
# telemetry off, and a bare axum hello-world built in the same run? Throughput on a shared VM moves with
# its neighbours; the server's own CPU time per request (perf task-clock / requests served) moves less,
# so this is the steadier view of the same ratios as bench/get-by-id.sh. Loopback only; about 2 minutes.
# Usage: bench/cpu-per-request.sh [SECONDS_PER_RUN (5)] [ROUNDS (4)]. Writes bench/results/cpu-per-request.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-5}
rounds=${2:-4}
need_wrk
need_tool perf linux-perf
start_hello_and_relays

declare -A urls=(
  [hello]="http://127.0.0.1:$p_hello/"
  [relay-telemetry-on]="http://127.0.0.1:$p_on/messages/$(create_message "$p_on")"
  [relay-telemetry-off]="http://127.0.0.1:$p_off/messages/$(create_message "$p_off")"
)
declare -A server=([hello]=$pid_hello [relay-telemetry-on]=$pid_on [relay-telemetry-off]=$pid_off)
order=(hello relay-telemetry-on relay-telemetry-off)
for name in "${order[@]}"; do taskset -c 1 wrk -t1 -c32 -d2s "${urls[$name]}" >/dev/null; done  # warm-up
for round in $(seq 1 "$rounds"); do
  for name in "${order[@]}"; do
    # The count covers the whole load run: the server is idle before and after it.
    perf stat -e task-clock -x, -p "${server[$name]}" -o "$work/$name.$round.cpu" -- sleep $((duration + 1)) &
    counting=$!; sleep 0.3
    taskset -c 1 wrk -t1 -c32 -d"${duration}s" "${urls[$name]}" >"$work/$name.$round.txt"
    wait "$counting"
    echo "round $round $name: $(wrk_summary "$work/$name.$round.txt")"
  done
done

python3 - "$work" "$rounds" "$duration" "$(machine)" > bench/results/cpu-per-request.md <<'PY'
import re, statistics, sys
work, rounds, duration, machine = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
names = ["hello", "relay-telemetry-on", "relay-telemetry-off"]
micros = {}
for name in names:
    per_round = []
    for r in range(1, rounds + 1):
        requests = int(re.search(r"(\d+) requests in", open(f"{work}/{name}.{r}.txt").read()).group(1))
        cpu_ms = next(float(l.split(",")[0]) for l in open(f"{work}/{name}.{r}.cpu") if "task-clock" in l)
        per_round.append(cpu_ms * 1000 / requests)
    micros[name] = per_round
print("# Server CPU per GET by id: relay vs bare axum, telemetry on vs off\n")
print(f"Measured {machine}. `bench/cpu-per-request.sh {duration} {rounds}`: release build, wrk 1 thread / 32 connections,")
print(f"{duration} s per run, {rounds} interleaved rounds; servers on core 0, wrk on core 1; loopback. CPU is the server")
print("process's task-clock over the whole run (`perf stat`) divided by the requests wrk completed.\n")
print("| server | CPU µs per request, median | min | all rounds |\n|---|---:|---:|---|")
for name in names:
    v = micros[name]
    print(f"| {name} | {statistics.median(v):.2f} | {min(v):.2f} | {' '.join(f'{x:.2f}' for x in v)} |")
hello, on, off = (statistics.median(micros[n]) for n in names)
print(f"\n- relay with full telemetry as a share of hello-world's throughput per CPU: **{hello / on:.1%}** (bar: >= 70%)")
print(f"- telemetry overhead, 1 - off/on: **{1 - off / on:.1%}** (bar: <= 10%)")
PY
cat bench/results/cpu-per-request.md
