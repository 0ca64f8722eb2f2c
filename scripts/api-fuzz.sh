#!/usr/bin/env bash
# Property-based API testing: schemathesis generates requests from the
# server's own OpenAPI document and fails on any 5xx answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${ZEROBOOT_BIN:-target/release/zeroboot}"
venv="${ZEROBOOT_FUZZ_VENV:-target/schemathesis-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis>=4,<5"
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
ZEROBOOT_API_KEYS_FILE= "$bin" serve --port "$port" --rate-limit 0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1 && break
    sleep 0.2
done
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/v1/openapi.json" \
    --checks not_a_server_error --max-examples "${ZEROBOOT_FUZZ_EXAMPLES:-60}" --request-timeout 60
