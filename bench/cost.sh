#!/usr/bin/env bash
# Question: what does a million requests cost in AWS, itemized? Drives the release binary in Lambda mode
# (cargo-lambda's Runtime API emulator, from PyPI) with a documented mix of API Gateway events on the
# DynamoDB store of the local AWS-API server, meters logs, EMF documents, DynamoDB request units, billed
# duration and custom metrics per invocation, and prices them (bench/lib/cost.py).
#   bench/cost.sh [ROUNDS (3)]      RELAY_BASELINE=<relay binary> adds a before column, same run.
# Writes bench/results/cost.md.
source "$(dirname "$0")/lib/common.sh"
rounds=${1:-3}
need_cargo_lambda
build_relay
./scripts/aws-local.sh install
eval "$(./scripts/aws-local.sh start)"
pids+=("$RELAY_AWS_LOCAL_PID")

emulator_port=$(free_port)
cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$emulator_port" >"$work/emulator.log" 2>&1 &
pids+=("$!")
until (exec 3<>"/dev/tcp/127.0.0.1/$emulator_port") 2>/dev/null; do sleep 0.1; done

binaries=()
[ -z "${RELAY_BASELINE:-}" ] || binaries+=(--binary "before=$RELAY_BASELINE")
binaries+=(--binary "this-build=$relay")
python3 bench/lib/cost.py "${binaries[@]}" --emulator "127.0.0.1:$emulator_port" --rounds "$rounds" \
  --json "$work/cost.json" --machine "$(machine)" --report bench/results/cost.md
cat bench/results/cost.md
