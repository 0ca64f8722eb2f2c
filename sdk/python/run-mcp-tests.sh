#!/usr/bin/env bash
# Drive the official MCP Python SDK (pinned in requirements-mcp.txt) against
# zeroboot's MCP server: /mcp of a real `zeroboot serve`, `zeroboot mcp --url`
# and `zeroboot mcp` (embedded engine) over stdio.
#   sdk/python/run-mcp-tests.sh [pytest args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot), PYTHON (>= 3.10,
# default python3), ZEROBOOT_MCP_VENV.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
venv="${ZEROBOOT_MCP_VENV:-$here/.venv-mcp}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: the mcp SDK needs Python >= 3.10; set PYTHON" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements-mcp.txt"

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider tests/mcp_sdk "$@"
