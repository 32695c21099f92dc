#!/usr/bin/env bash
# Lint the relay's OpenAPI document (as `relay openapi` prints it, the same as GET /openapi.json)
# with Redocly CLI's recommended rules (pinned in scripts/openapi-lint/package.json): 0 errors or
# this fails.
#
# Usage: scripts/openapi-lint.sh   (RELAY_BIN defaults to target/debug/relay)
# Report: test-output/openapi-lint/ (the document and Redocly's output).
set -euo pipefail
cd "$(dirname "$0")/.."

relay_bin=${RELAY_BIN:-target/debug/relay}
tool_dir=scripts/openapi-lint
out=test-output/openapi-lint

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ -x "$relay_bin" ] || fail "no relay binary at $relay_bin (cargo build -p relay)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "openapi-lint: installing Node.js and npm"
  apt_install nodejs npm
fi
if [ -f "$tool_dir/package-lock.json" ]; then
  npm ci --prefix "$tool_dir" --no-audit --no-fund --loglevel=error
else
  npm install --prefix "$tool_dir" --no-audit --no-fund --loglevel=error
fi

mkdir -p "$out"
RELAY_STORE=memory: "$relay_bin" openapi >"$out/openapi.json"
set +e
"$tool_dir/node_modules/.bin/redocly" lint "$out/openapi.json" --config "$tool_dir/redocly.yaml" \
  --format stylish >"$out/redocly.log" 2>&1
status=$?
set -e
grep -v '[║╔╚]' "$out/redocly.log" | sed '/^\s*$/d' | tail -n 20
[ "$status" -eq 0 ] || fail "Redocly found errors in the OpenAPI document (exit $status); see $out/redocly.log"
echo "openapi-lint: 0 errors"
