#!/usr/bin/env bash
# matplotlib for `make soak`'s plot, in a venv outside the repository
# (printed on stdout). Quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AURUM_SOAK_VENV:-$HOME/.cache/aurum-soak/venv}"
requirements=scripts/soak-tools.txt
if ! { [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/.aurum-requirements"; }; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$venv/.aurum-requirements"
fi
echo "$venv/bin/python"
