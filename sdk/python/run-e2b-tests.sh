#!/usr/bin/env bash
# Drive the official E2B Python SDK (pinned in requirements-e2b.txt) against
# a real `zeroboot serve`: E2B_API_URL = E2B_SANDBOX_URL = the server.
#   sdk/python/run-e2b-tests.sh [pytest args...]
# Env: ZEROBOOT_BIN (default: <repo>/target/release/zeroboot), PYTHON (>= 3.10,
# default python3), ZEROBOOT_E2B_VENV, ZEROBOOT_TEST_LANGUAGES (the server's
# --languages; default python,node,code-interpreter: the code-interpreter
# tests need it, and its image and template are built on first start).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
venv="${ZEROBOOT_E2B_VENV:-$here/.venv-e2b}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: the e2b SDK needs Python >= 3.10; set PYTHON" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements-e2b.txt"
# The fixtures' helpers import nothing from our SDK, but keep it there too.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$here"

cd "$here"
export ZEROBOOT_TEST_LANGUAGES="${ZEROBOOT_TEST_LANGUAGES:-python,node,code-interpreter}"
exec "$venv/bin/python" -m pytest -p no:cacheprovider tests/e2b "$@"
