#!/usr/bin/env bash
# Set up (idempotent) and run every test: ruff, unit, parity and ROS integration tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tracker
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # DDS stays on this machine
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 59))}"
./scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
echo "ruff: check and format"
ruff check .
ruff format --check . >/dev/null || { ruff format --diff . | head -50; echo "ruff format: files need formatting (run: ruff format .)"; exit 1; }
exec python -m pytest -q -p no:cacheprovider "$@"
