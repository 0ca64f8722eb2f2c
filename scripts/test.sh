#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian
# packages), then runs every test of the workspace. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# haproxy, dnsmasq-base: the fleet tests' front balancer and DNS server
# (dnsmasq-base is the binary alone, without a system service on port 53).
# libpython3.11-testsuite: CPython's test files, which `zeroboot conformance python`
# (tests/conformance.rs) runs natively next to the sandbox.
for pkg in busybox-static gcc libc6-dev curl python3-numpy bubblewrap haproxy dnsmasq-base libpython3.11-testsuite; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing test dependencies: ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -w /dev/kvm ]; then
    echo "error: /dev/kvm is missing or not writable; zeroboot's tests run real KVM VMs" >&2
    exit 1
fi

cargo test --workspace --release "$@"

# The SDKs against a real server, and the API against its OpenAPI document.
sdk/python/run-tests.sh
# The official E2B SDK (pinned) against our E2B-compatible control plane.
sdk/python/run-e2b-tests.sh
sdk/node/run-tests.sh
sdk/node/run-e2b-tests.sh
# The official MCP SDKs (pinned) against /mcp and `zeroboot mcp`.
sdk/python/run-mcp-tests.sh
sdk/node/run-mcp-tests.sh
scripts/api-fuzz.sh
