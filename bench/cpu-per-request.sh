#!/usr/bin/env bash
# Question: how much server CPU does one GET /messages/{id} cost: relay with full telemetry, relay with
# telemetry off, and a bare axum hello-world built in the same run? Throughput on a shared VM moves with
# its neighbours from one run to the next (see bench/get-by-id.sh), so here two servers at a time are
# loaded together, sharing core 0 (the scheduler splits it between them), and each one's CPU time (from
# /proc/PID/task/*/schedstat) is divided by the requests it served: whatever the machine does to one of
# the pair, it does to the other. Pairs: relay on + off (telemetry overhead), relay on + hello-world,
# relay off + a second relay off as a control, which shows how far the method reads two identical servers
# apart, relay on with the debug buffer + relay on (what the buffer costs a successful request), and relay
# on exporting every request's spans over OTLP to a loopback sink + relay on (what OpenTelemetry at 100%
# sampling costs; the sink counts the spans it received, so spans the SDK dropped show), and the same at 5%
# (the stacks' default ratio), and relay off + hello-world (what the relay costs beyond its telemetry: the
# ceiling of the on + hello-world ratio). Fresh processes every round; the two load generators start in
# alternating order. Loopback only; about 8 minutes. With
# RELAY_BASELINE=PATH (another relay build, e.g. the previous release), an eighth pair compares this build
# with that one, both with full telemetry and no OTLP endpoint: before/after in one run; with
# RELAY_BASELINE_AS=relay-log-buffer (any relay set-up of bench/lib/common.sh), both in that set-up.
# With RELAY_CACHE_TTL=0s every relay answers from its store (no read cache): each request then makes a
# store call too, with its span and its debug line; the figures go to cpu-per-request-uncached.md.
# Usage: bench/cpu-per-request.sh [SECONDS_PER_RUN (4)] [ROUNDS (15)]. Writes bench/results/cpu-per-request.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-4}
rounds=${2:-15}
case ${RELAY_CACHE_TTL-unset} in
  unset) results=bench/results/cpu-per-request.md ;;
  0 | 0s) results=bench/results/cpu-per-request-uncached.md ;;
  *) echo "RELAY_CACHE_TTL=$RELAY_CACHE_TTL: only 0s (uncached GETs) is a mode of this benchmark" >&2; exit 1 ;;
esac
need_wrk
need_otlp_sink
build_get_servers

pairs=("relay-telemetry-on relay-telemetry-off" "relay-telemetry-on hello" "relay-telemetry-off relay-control"
       "relay-log-buffer relay-telemetry-on" "relay-otel relay-telemetry-on" "relay-otel-sampled relay-telemetry-on"
       "relay-telemetry-off hello")
baseline_as=${RELAY_BASELINE_AS:-relay-telemetry-on}
[ -z "${RELAY_BASELINE:-}" ] || pairs+=("$baseline_as relay-baseline")
# cpu_ns PID: CPU time of all the process's threads so far, in nanoseconds.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%.0f", ns}'; }
# load SECONDS OUT NAME...: one wrk per server, all at once on core 1, output in $work/NAME.OUT.txt.
load() {
  local seconds=$1 out=$2 name loaders=()
  shift 2
  for name in "$@"; do
    taskset -c 1 wrk -t1 -c32 -d"${seconds}s" "${url[$name]}" >"$work/$name.$out.txt" &
    loaders+=($!)
  done
  wait "${loaders[@]}"
}
declare -A before
for round in $(seq 1 "$rounds"); do
  line="round $round:"
  for p in "${!pairs[@]}"; do
    read -r -a pair <<<"${pairs[$p]}"
    for name in "${pair[@]}"; do start_server "$name" "$round"; done
    spans_before=$(otlp_spans)
    load 1 warm "${pair[@]}"
    for name in "${pair[@]}"; do before[$name]=$(cpu_ns "${pid[$name]}"); done
    if [ $((round % 2)) -eq 0 ]; then load "$duration" "$p.$round" "${pair[1]}" "${pair[0]}"; else load "$duration" "$p.$round" "${pair[@]}"; fi
    for name in "${pair[@]}"; do
      awk '/requests in/ {print $1}' "$work/$name.warm.txt" >"$work/$name.$p.$round.warm"
      requests=$(awk '/requests in/ {print $1}' "$work/$name.$p.$round.txt")
      echo "$requests $(( $(cpu_ns "${pid[$name]}") - ${before[$name]} ))" >"$work/$name.$p.$round.cpu"
      line="$line $name $(awk '{printf "%.2f", $2 / $1 / 1000}' "$work/$name.$p.$round.cpu")"
    done
    stop_servers "${pair[@]}"  # a stopped relay exports the spans it still holds
    echo "$(( $(otlp_spans) - spans_before ))" >"$work/spans.$p.$round"
    line="$line |"
  done
  echo "$line µs per request"
done

python3 - "$work" "$rounds" "$duration" "$(machine)" "${RELAY_BASELINE:-}" "$baseline_as" "${RELAY_CACHE_TTL:-}" > "$results" <<'PY'
import statistics, sys
work, rounds, duration, machine, baseline, baseline_as, cache_ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
uncached = cache_ttl != ""
pairs = [("relay-telemetry-on", "relay-telemetry-off"), ("relay-telemetry-on", "hello"),
         ("relay-telemetry-off", "relay-control"), ("relay-log-buffer", "relay-telemetry-on"),
         ("relay-otel", "relay-telemetry-on"), ("relay-otel-sampled", "relay-telemetry-on"),
         ("relay-telemetry-off", "hello")]
if baseline:
    pairs.append((baseline_as, "relay-baseline"))

def micros(name, pair):
    out = []
    for r in range(1, rounds + 1):
        requests, ns = (int(x) for x in open(f"{work}/{name}.{pair}.{r}.cpu").read().split())
        out.append(ns / requests / 1000)
    return out

def spread(values):
    q = statistics.quantiles(values, n=4)
    return (f"**{statistics.median(values):.1%}** (middle half {q[0]:.1%} to {q[2]:.1%}; "
            f"all rounds {min(values):.1%} to {max(values):.1%})")

runs = {(name, p): micros(name, p) for p, pair in enumerate(pairs) for name in pair}
ratio = lambda p, a, b: [x / y for x, y in zip(runs[(a, p)], runs[(b, p)])]
print(f"# Server CPU per GET by id{', uncached' if uncached else ''}: relay vs bare axum, telemetry on vs off\n")
command = f"{'RELAY_CACHE_TTL=' + cache_ttl + ' ' if uncached else ''}bench/cpu-per-request.sh {duration} {rounds}"
print(f"Measured {machine}. `{command}`: release build. Two servers at a time,")
print(f"loaded together for {duration} s (wrk 1 thread / 32 connections each, both on core 1; both servers on core 0),")
print(f"{len(pairs)} pairs per round, {rounds} rounds, fresh processes for every pair. CPU is each server process's own")
print("CPU time over the run (`/proc/PID/task/*/schedstat`) divided by the requests its wrk completed. Telemetry")
print("on: a JSON line per request to a file and Prometheus metrics; off: `RELAY_NO_TELEMETRY=1`. relay-control is")
print("a second telemetry-off relay; relay-log-buffer is telemetry on with `RELAY_LOG_BUFFER=debug`; relay-otel is")
print("telemetry on exporting every request's spans (`OTEL_TRACES_SAMPLER=always_on`) over OTLP/HTTP to a sink on")
print("core 1 that decodes and counts them. Sharing a core costs each server some cache, so the figures sit above those")
print("of a server running alone; the ratios are what this measures.")
print("Every relay answers each GET from its SQLite store (no read cache), so each request also makes a store call.\n"
      if uncached else "Every relay answers each GET from its read cache after the first.\n")
print("| pair | server | CPU µs per request, median | min | max |\n|---|---|---:|---:|---:|")
for p, pair in enumerate(pairs):
    for name in pair:
        v = runs[(name, p)]
        print(f"| {p + 1} | {name} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
print("\nRatios are taken within each pair's run, then summarised over the rounds:\n")
print(f"- telemetry overhead, 1 - off/on (pair 1): "
      f"{spread([1 - r for r in ratio(0, 'relay-telemetry-off', 'relay-telemetry-on')])} (bar: <= 12%)")
print(f"- relay with full telemetry as a share of hello-world's requests per CPU second (pair 2): "
      f"{spread(ratio(1, 'hello', 'relay-telemetry-on'))} (bar: >= 65%)")
print(f"- control, two identical telemetry-off relays, control/off - 1 (pair 3): "
      f"{spread([r - 1 for r in ratio(2, 'relay-control', 'relay-telemetry-off')])}")
print(f"- the debug buffer on a successful request, CPU per request, buffer/on - 1 (pair 4): "
      f"{spread([r - 1 for r in ratio(3, 'relay-log-buffer', 'relay-telemetry-on')])} (bar: <= 2 points)")
print(f"- OpenTelemetry export at 100% sampling, CPU per request, otel/on - 1 (pair 5): "
      f"{spread([r - 1 for r in ratio(4, 'relay-otel', 'relay-telemetry-on')])} (bar: <= 5 points)")
print(f"- OpenTelemetry at the stacks' default, 5% of the requests exported, otel-sampled/on - 1 (pair 6): "
      f"{spread([r - 1 for r in ratio(5, 'relay-otel-sampled', 'relay-telemetry-on')])}")
exported = sum(int(open(f"{work}/spans.4.{r}").read()) for r in range(1, rounds + 1))
served = sum(int(open(f"{work}/relay-otel.4.{r}.cpu").read().split()[0])
             + int(open(f"{work}/relay-otel.4.{r}.warm").read() or 0) for r in range(1, rounds + 1))
per_request = ("one server span and its store span; below 2.00" if uncached
               else "each GET is answered from the cache: one server span, no store span; below 1.00")
print(f"  - spans the sink received per request relay-otel served, warm-up included ({per_request}, "
      f"the SDK dropped spans): **{exported / served:.3f}**")
print(f"- relay with telemetry off as a share of hello-world's requests per CPU second (pair 7: what the "
      f"relay costs beyond telemetry, its ceiling for the bar of pair 2): {spread(ratio(6, 'hello', 'relay-telemetry-off'))}")
if baseline:
    print(f"- this build vs the baseline build ({baseline.split('/')[-1]}), both as {baseline_as}, CPU per request, "
          f"this/baseline - 1 (pair 8; negative: this build is cheaper): "
          f"{spread([r - 1 for r in ratio(7, baseline_as, 'relay-baseline')])}")
PY
cat "$results"
