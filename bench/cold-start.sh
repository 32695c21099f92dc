#!/usr/bin/env bash
# Question: how long does the relay's Lambda binary take to start, next to a lambda_http hello-world
# (relay/examples/lambda_hello.rs), and how much memory does it peak at? Both release builds, started
# afresh and alternately under a Runtime API stand-in: start to first `next` call, to first response,
# peak RSS. The relay runs on the DynamoDB store of the local AWS-API server, as in AWS.
#   bench/cold-start.sh [ROUNDS (15)]     RELAY_BASELINE=<relay binary> adds another build, same rounds.
# Writes bench/results/cold-start.md.
source "$(dirname "$0")/lib/common.sh"
rounds=${1:-15}
build_relay --example lambda_hello
./scripts/aws-local.sh install
eval "$(./scripts/aws-local.sh start)"
pids+=("$RELAY_AWS_LOCAL_PID")
RELAY_STORE=dynamodb:cold-start "$relay" create-table >/dev/null
export RELAY_COLD_STORE=dynamodb:cold-start
baseline=()
[ -z "${RELAY_BASELINE:-}" ] || baseline=(--baseline "$RELAY_BASELINE")
python3 bench/lib/cold_start.py --hello "$target_dir/release/examples/lambda_hello" --relay "$relay" "${baseline[@]}" \
  --rounds "$rounds" --machine "$(machine)" --report bench/results/cold-start.md
cat bench/results/cold-start.md
