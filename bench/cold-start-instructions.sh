#!/usr/bin/env bash
# Question: where does the relay's Lambda init go? Counted, not timed: the relay's Lambda binary and the
# lambda_http hello-world are each started once under callgrind (valgrind) in the Lambda environment of
# bench/cold-start.sh, on the local AWS-API server's DynamoDB table, and counted from process start to
# their first invocation's response; the report splits the relay's count by part (AWS configuration,
# its trust store, building the app, the first expiry sweep, ...). The map for cutting cold start; the
# times of bench/cold-start.sh decide its bar. Loopback only; about 1 minute.
# RELAY_COLD_CA_BUNDLE=FILE counts (and times, with bench/cold-start.sh) a smaller CA bundle.
# Usage: bench/cold-start-instructions.sh. Writes bench/results/cold-start-instructions.md.
source "$(dirname "$0")/lib/common.sh"
need_tool valgrind valgrind
need_tool callgrind_control valgrind
need_tool callgrind_annotate valgrind
build_relay --example lambda_hello
./scripts/aws-local.sh install
eval "$(./scripts/aws-local.sh start)"
pids+=("$RELAY_AWS_LOCAL_PID")
# A new empty table each run, so the first sweep finds the same nothing every time.
table=cold-start-instructions-$(date +%s)-$$
RELAY_STORE=dynamodb:$table "$relay" create-table >/dev/null
export RELAY_COLD_STORE=dynamodb:$table
python3 bench/lib/cold_start.py --hello "$target_dir/release/examples/lambda_hello" --relay "$relay" \
  --machine "$(machine)" --callgrind "$work" --report bench/results/cold-start-instructions.md
cat bench/results/cold-start-instructions.md
