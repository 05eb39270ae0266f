#!/usr/bin/env bash
# python-socketio for the Python end-to-end test (tests/it/e2e_python.rs
# runs tests/e2e/chat_python.py with it), in a venv outside the repository,
# at AURUM_PYCLIENT_VENV or ~/.cache/aurum-ci/pyclient.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/python-tools.sh "${AURUM_PYCLIENT_VENV:-$HOME/.cache/aurum-ci/pyclient}" tests/e2e/requirements-python.txt >/dev/null
