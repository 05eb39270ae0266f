#!/usr/bin/env bash
# matplotlib for `make soak`'s plot, in a venv outside the repository
# (its python printed on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/python-tools.sh "${AURUM_SOAK_VENV:-$HOME/.cache/aurum-soak/venv}" scripts/soak-tools.txt)"
echo "$venv/bin/python"
