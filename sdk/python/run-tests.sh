#!/usr/bin/env bash
# Run the Python SDK's tests against a real `zeroboot serve`.
#   sdk/python/run-tests.sh [pytest args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot), PYTHON (the
# interpreter for the venv, default python3), ZEROBOOT_TEST_STARTUP_TIMEOUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
venv="${ZEROBOOT_SDK_VENV:-$here/.venv}"

if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet "pytest>=7"
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$here"

cd "$here"
# The code-interpreter tests need its template (built on the first start).
export ZEROBOOT_TEST_LANGUAGES="${ZEROBOOT_TEST_LANGUAGES:-python,node,code-interpreter}"
# tests/e2b and tests/mcp_sdk need the e2b and mcp packages:
# run-e2b-tests.sh and run-mcp-tests.sh run them.
exec "$venv/bin/python" -m pytest -p no:cacheprovider --ignore=tests/e2b --ignore=tests/mcp_sdk "$@"
