#!/usr/bin/env bash
# Drive the official e2b and @e2b/code-interpreter npm packages (pinned in
# e2b-tests/package.json and its lock file) against a real `zeroboot serve`
# (code-interpreter.test.mjs starts one serving code-interpreter: its image
# and template are built on the first start).
#   sdk/node/run-e2b-tests.sh [extra node --test args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/e2b-tests"
npm ci --no-audit --no-fund --loglevel=error
exec node --test "$@" *.test.mjs
