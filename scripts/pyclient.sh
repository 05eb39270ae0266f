#!/usr/bin/env bash
# python-socketio for the Python end-to-end test (tests/it/e2e_python.rs
# runs tests/e2e/chat_python.py with it), in a venv outside the repository,
# at AURUM_PYCLIENT_VENV or ~/.cache/aurum-ci/pyclient. Quick when nothing
# changed: the venv is rebuilt only when the pinned list does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AURUM_PYCLIENT_VENV:-$HOME/.cache/aurum-ci/pyclient}"
requirements=tests/e2e/requirements-python.txt
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/.aurum-requirements"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/.aurum-requirements"
echo "python-socketio installed in $venv"
