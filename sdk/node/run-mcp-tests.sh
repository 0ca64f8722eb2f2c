#!/usr/bin/env bash
# Drive the official MCP TypeScript SDK (pinned in mcp-tests/package.json and
# its lock file) against /mcp of a real `zeroboot serve`.
#   sdk/node/run-mcp-tests.sh [extra node --test args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/mcp-tests"
npm ci --no-audit --no-fund --loglevel=error
exec node --test "$@" *.test.mjs
