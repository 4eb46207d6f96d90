#!/usr/bin/env bash
# Runs every test of the TypeScript client: unit tests, integration tests
# against the real `iris` binary, and the end-to-end browser test of the
# demo in headless Chromium. Installs what it needs: the npm packages
# (npm ci, pinned by package-lock.json) and, as root, Debian's chromium
# when it is missing. Without Chromium the browser test is reported as
# SKIPPED by name, never counted as passed.
#
#   IRIS_BIN=/path/to/iris clients/js/test.sh
set -euo pipefail

if [ -z "${IRIS_BIN:-}" ] || [ ! -x "$IRIS_BIN" ]; then
  echo "clients/js/test.sh: set IRIS_BIN to the iris binary (cargo build --bin iris); got '${IRIS_BIN:-}'" >&2
  exit 2
fi
# Absolute, before leaving the caller's directory.
IRIS_BIN=$(cd "$(dirname "$IRIS_BIN")" && pwd)/$(basename "$IRIS_BIN")
export IRIS_BIN
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "clients/js/test.sh: Node.js 20 or later is needed" >&2; exit 2; }
npm ci --no-audit --no-fund --loglevel=error
# The demo served by iris is built from these sources and committed
# (http/demo/): it must match a fresh build.
node scripts/build-demo.mjs --check
npx tsc -p tsconfig.demo.json

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || true
fi

failed=0
run() {
  local name=$1
  shift
  echo "clients/js: $name"
  if ! "$@"; then
    echo "clients/js: FAILED $name" >&2
    failed=1
  fi
}
run "unit tests" node --test-timeout=60000 --test test/unit/
# Node 20 has no global WebSocket without this flag (Node 22 has it by default).
run "integration tests against $IRIS_BIN" node --experimental-websocket --no-warnings --test-timeout=180000 --test --test-concurrency=1 test/integration/
if [ -x "$chromium" ]; then
  CHROMIUM=$chromium run "browser test (Chromium: $("$chromium" --version 2>/dev/null | head -n 1))" node --test-timeout=180000 --test test/browser/
else
  echo "clients/js: SKIPPED browser test demo.test.mjs (no Chromium at $chromium; apt-get install chromium as root)"
fi
node scripts/size.mjs
exit $failed
