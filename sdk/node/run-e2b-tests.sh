#!/usr/bin/env bash
# Drive the official e2b npm package (pinned in e2b-tests/package.json and
# its lock file) against a real `zeroboot serve`.
#   sdk/node/run-e2b-tests.sh [extra node --test args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/e2b-tests"
npm ci --no-audit --no-fund --loglevel=error
exec node --test "$@" *.test.mjs
