#!/usr/bin/env bash
# Run the Node SDK's tests against a real `zeroboot serve`.
#   sdk/node/run-tests.sh [extra node --test args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot),
# ZEROBOOT_TEST_STARTUP_TIMEOUT (seconds, default 180).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
exec node --test "$@" test/*.test.mjs
