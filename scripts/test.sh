#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs formatting, lints,
# unit and API tests (real HTTP on loopback; DynamoDB and CloudWatch on a local moto server), the
# durability tests (kill -9 of the real binary), the browser end-to-end tests (Debian's chromium driven
# by playwright-core), Redocly's lint and schemathesis over the OpenAPI document, and the canary
# against a local relay.
# Reports go to test-output/. Any missing tool is a failure with a message, never a skip.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/test-output"
mkdir -p "$out"

script_name="test"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "Checking the toolchain"
command -v cargo >/dev/null || fail "cargo is not installed (https://rustup.rs)"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt || fail "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy || fail "clippy is missing: rustup component add clippy"
cargo --version

step "Formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "Lints (cargo clippy --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "Module structure (no file imports from a module that imports it back)"
python3 scripts/module-cycles.py --self-test >/dev/null || fail "the module-cycle checker failed its self-test"
python3 scripts/module-cycles.py

step "Local AWS-API server (moto on loopback) for the DynamoDB and CloudWatch tests"
./scripts/aws-local.sh install
eval "$(./scripts/aws-local.sh start)"
trap './scripts/aws-local.sh stop' EXIT
echo "AWS-API server at $AWS_ENDPOINT_URL"

step "Unit, API, conformance and durability tests (cargo test)"
cargo test --workspace 2>&1 | tee "$out/cargo-test.log" || fail "cargo test failed (log: test-output/cargo-test.log)"

step "Browser end-to-end tests"
RELAY_BIN="$root/target/debug/relay" bash scripts/e2e.sh

step "OpenAPI lint (Redocly CLI, recommended rules, 0 errors)"
RELAY_BIN="$root/target/debug/relay" bash scripts/openapi-lint.sh

step "Property-based API tests (schemathesis over /openapi.json, every check, >= 1000 cases)"
RELAY_BIN="$root/target/debug/relay" bash scripts/schemathesis.sh

step "Canary against a locally started relay (reports in test-output/canary/)"
bash scripts/canary-local.sh

step "Ops checks: IaC lint, dashboards/alarms/runbooks cross-checks, stacks deployed into moto"
bash scripts/ops-checks.sh

step "All tests passed; reports are in test-output/"
