#!/usr/bin/env bash
# Render deploy/helm/zeroboot for each values combination, lint it, and
# validate every manifest against the Kubernetes schemas (opt-in: it
# installs two pinned PyPI packages into a venv on first run).
#   deploy/helm/check-chart.sh
# Env: PYTHON (default python3), ZEROBOOT_CHART_VENV.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${ZEROBOOT_CHART_VENV:-$here/.venv-chart}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$here/requirements-check.txt"
exec "$venv/bin/python" "$here/check_chart.py" "$here/zeroboot"
