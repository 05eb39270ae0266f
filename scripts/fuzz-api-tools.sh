#!/usr/bin/env bash
# schemathesis for `make fuzz-api`, in a venv outside the repository (its
# `schemathesis` printed on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/python-tools.sh "${AURUM_FUZZ_VENV:-$HOME/.cache/aurum-fuzz/venv}" scripts/fuzz-api-tools.txt)"
echo "$venv/bin/schemathesis"
