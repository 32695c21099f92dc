#!/usr/bin/env bash
# Question: is the relay ahead of the Rust pastebins people already run? The same create + get workload
# against the relay (SQLite store, full telemetry), rustypaste and microbin, each installed from
# crates.io here (pinned versions) and run with its default durable storage: rustypaste writes one file
# per paste, microbin keeps pastes in SQLite. Servers on core 0, wrk on core 1; loopback only.
# About 2 minutes after the first install (which compiles both peers: about 10 minutes).
# Usage: bench/peers.sh [SECONDS_PER_RUN (5)] [ROUNDS (2)]. Writes bench/results/peers.md.
source "$(dirname "$0")/lib/common.sh"
duration=${1:-5}
rounds=${2:-2}
need_wrk
build_relay

# Peers live outside the repository's target dir, installed once per machine.
peers=${RELAY_BENCH_PEERS:-$HOME/.cache/relayops-bench-peers}
rustypaste_version=0.18.1
microbin_version=2.1.4
install_peer() {
  grep -q "\"$1 $2 " "$peers/.crates.toml" 2>/dev/null \
    || cargo install --locked --quiet --root "$peers" "$1@$2" \
    || { echo "could not install $1 $2 from crates.io" >&2; exit 1; }
}
install_peer rustypaste "$rustypaste_version"
install_peer microbin "$microbin_version"

p_relay=$(free_port); p_rp=$(free_port); p_mb=$(free_port)
RELAY_LISTEN=127.0.0.1:$p_relay RELAY_STORE=sqlite:$work/relay.db RELAY_RATE_LIMIT=0 RUST_LOG=info \
  taskset -c 0 "$relay" >"$work/relay.log" 2>&1 & pids+=($!)

# rustypaste's shipped configuration, with an address, and random names long enough not to collide.
mkdir -p "$work/rustypaste"
cat >"$work/rustypaste/config.toml" <<TOML
[server]
address = "127.0.0.1:$p_rp"
upload_path = "$work/rustypaste/upload"
max_content_length = "10MB"
timeout = "30s"

[landing_page]
text = "rustypaste"

[paste]
random_url = { type = "alphanumeric", length = 16 }
default_extension = "txt"
mime_override = []
mime_blacklist = []
duplicate_files = true
delete_expired_files = { enabled = false, interval = "1h" }
TOML
(cd "$work/rustypaste" && exec taskset -c 0 "$peers/bin/rustypaste") >"$work/rustypaste.log" 2>&1 & pids+=($!)

# microbin with its defaults (SQLite database under its data directory).
(cd "$work" && MICROBIN_BIND=127.0.0.1 MICROBIN_PORT=$p_mb exec taskset -c 0 "$peers/bin/microbin") \
  >"$work/microbin.log" 2>&1 & pids+=($!)

wait_up "http://127.0.0.1:$p_relay/readyz"; wait_up "http://127.0.0.1:$p_rp/"; wait_up "http://127.0.0.1:$p_mb/"

text=$bench_text
boundary=relayopsbenchboundary
# One create request per server, as a wrk script; every server gets the same text.
post_lua "$work/relay.lua"
cat >"$work/rustypaste.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "multipart/form-data; boundary=$boundary"
wrk.body = "--$boundary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.txt\"\r\nContent-Type: text/plain\r\n\r\n$text\r\n--$boundary--\r\n"
LUA
cat >"$work/microbin.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "multipart/form-data; boundary=$boundary"
wrk.body = "--$boundary\r\nContent-Disposition: form-data; name=\"expiration\"\r\n\r\n24hour\r\n--$boundary\r\nContent-Disposition: form-data; name=\"privacy\"\r\n\r\npublic\r\n--$boundary\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n$text\r\n--$boundary--\r\n"
LUA

# One stored item per server to read back, and a check that each read returns the text.
relay_id=$(create_message "$p_relay")
rp_url=$(curl -sf -F "file=@-;filename=m.txt" "http://127.0.0.1:$p_rp/" <<<"$text" | tr -d '\n')
mb_slug=$(curl -sf -o /dev/null -w '%{redirect_url}' -F expiration=24hour -F privacy=public \
  -F "content=$text" "http://127.0.0.1:$p_mb/upload" | sed 's#.*/upload/##')
declare -A alive=()
declare -A create_url=(
  [relay]="http://127.0.0.1:$p_relay/messages"
  [rustypaste]="http://127.0.0.1:$p_rp/"
  [microbin]="http://127.0.0.1:$p_mb/upload"
)
declare -A get_url=(
  [relay]="http://127.0.0.1:$p_relay/messages/$relay_id"
  [rustypaste]="$rp_url"
  [microbin]="http://127.0.0.1:$p_mb/raw/$mb_slug"
)
for name in relay rustypaste microbin; do
  curl -sf "${get_url[$name]}" | grep -q "$text" || { echo "$name did not return the stored text" >&2; exit 1; }
done

# All gets first, then all creates: a peer that breaks under the create load (microbin 2.1.4 panics on
# its first paste-id collision and then fails every request) still gets its reads measured.
order=(relay rustypaste microbin)
for kind in get create; do
  for round in $(seq 1 "$rounds"); do
    for name in "${order[@]}"; do
      if [ "$kind" = get ]; then
        taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency "${get_url[$name]}" >"$work/$name.get.$round.txt"
      else
        taskset -c 1 wrk -t1 -c32 -d"${duration}s" --latency -s "$work/$name.lua" "${create_url[$name]}" \
          >"$work/$name.create.$round.txt"
      fi
      echo "$kind round $round $name: $(wrk_summary "$work/$name.$kind.$round.txt")"
    done
  done
done
# Still alive and serving after the creates?
for name in "${order[@]}"; do
  if curl -sf -m 5 "${get_url[$name]}" | grep -q "$text"; then alive[$name]=yes; else alive[$name]=no; fi
done

python3 - "$work" "$rounds" "$duration" "$(machine)" "$rustypaste_version" "$microbin_version" \
  "${alive[relay]}" "${alive[rustypaste]}" "${alive[microbin]}" \
  > bench/results/peers.md <<'PY'
import statistics, sys
sys.path.insert(0, "bench/lib")
from wrk import summary
work, rounds = sys.argv[1], int(sys.argv[2])
duration, machine, rp_version, mb_version = sys.argv[3:7]
alive = dict(zip(["relay", "rustypaste", "microbin"], sys.argv[7:10]))
names = ["relay", "rustypaste", "microbin"]
def medians(name, kind):
    runs = [summary(f"{work}/{name}.{kind}.{r}.txt") for r in range(1, rounds + 1)]
    return [statistics.median(run[i] for run in runs) for i in range(3)] + [sum(run[3] for run in runs)]
rows = {(n, k): medians(n, k) for n in names for k in ("create", "get")}
print("# The relay against peers: create + get\n")
print(f"Measured {machine}. `bench/peers.sh {duration} {rounds}`: release builds, wrk 1 thread / 32 connections,")
print(f"{duration} s per run, {rounds} interleaved rounds, medians; servers on core 0, wrk on core 1; loopback.")
print(f"Peers from crates.io with their default storage: rustypaste {rp_version} (one file per paste),")
print(f"microbin {mb_version} (SQLite). The relay: SQLite store (WAL, `synchronous=FULL`: a 201 is on disk),")
print("full telemetry (a JSON log line per request, Prometheus metrics). Every server stores the same")
print("~90-byte text. Gets (of one stored item) are measured first, then creates; errors are non-2xx/3xx")
print("answers plus connections closed or timed out without one.\n")
print("| server | get/s | get p99 ms | get errors | create/s | create p99 ms | create errors | serving after |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for n in names:
    c, g = rows[(n, "create")], rows[(n, "get")]
    print(f"| {n} | {g[0]:,.0f} | {g[2]:.3f} | {g[3]} | {c[0]:,.0f} | {c[2]:.3f} | {c[3]} | {alive[n]} |")
print()
def ratio(a, b):
    return f"{a / b:.1f}x" if b else "the peer served none"
for peer in names[1:]:
    print(f"- relay / {peer}: gets **{ratio(rows[('relay', 'get')][0], rows[(peer, 'get')][0])}**, "
          f"creates **{ratio(rows[('relay', 'create')][0], rows[(peer, 'create')][0])}** (bar: ahead of both)")
PY
cat bench/results/peers.md
