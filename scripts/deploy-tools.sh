#!/usr/bin/env bash
# The Python tools the deploy/ tests run (tests/it/deploy.rs), in a venv
# outside the repository; `make test` puts its bin/ first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/python-tools.sh "${AURUM_CI_VENV:-$HOME/.cache/aurum-ci/venv}" scripts/deploy-tools.txt >/dev/null
