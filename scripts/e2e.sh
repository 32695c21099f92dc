#!/usr/bin/env bash
# End-to-end tests of the web app: install what they need (Debian's Chromium, the npm packages in
# relay/tests/e2e), then run them with node's built-in test runner against a built relay binary.
#
# Usage: scripts/e2e.sh            (uses target/debug/relay)
#        RELAY_BIN=target/release/relay scripts/e2e.sh
#
# Never downloads a browser build and never skips: a missing binary or browser is a failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

chromium=/usr/bin/chromium
e2e_dir=relay/tests/e2e
export RELAY_BIN="${RELAY_BIN:-target/debug/relay}"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# The relay first: there is no point installing a browser to test a binary that is not there.
[ -x "$RELAY_BIN" ] || fail "no relay binary at $RELAY_BIN: build it with \`cargo build -p relay\` or set RELAY_BIN"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: installing Node.js and npm"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js 20 or newer is needed, found $(node --version)"

if [ ! -x "$chromium" ]; then
  echo "e2e: installing Chromium from Debian"
  # Recommended packages bring the fonts the screenshots need.
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update; apt_updated=1; fi
  as_root apt-get install -y chromium || true
fi
[ -x "$chromium" ] || fail "Chromium is missing at $chromium after install (apt-get install -y chromium); the browser tests cannot run"
echo "e2e: $("$chromium" --version 2>/dev/null || echo "chromium at $chromium")"

# npm ci installs exactly the lock file; the first run, before a lock exists, creates it.
if [ -f "$e2e_dir/package-lock.json" ]; then
  npm ci --prefix "$e2e_dir" --no-audit --no-fund --loglevel=error
else
  npm install --prefix "$e2e_dir" --no-audit --no-fund --loglevel=error
fi

mkdir -p test-output/e2e
echo "e2e: testing $RELAY_BIN; screenshots go to test-output/e2e/"
cd "$e2e_dir"
# One file at a time: the tests share one relay and one browser per suite, and the machine has 2 cores.
exec node --test --test-concurrency=1 --test-reporter=spec app.test.mjs
