#!/usr/bin/env bash
# The Python tools the deploy/ tests run (tests/it/deploy.rs), in a venv
# outside the repository; `make test` puts its bin/ first on PATH. Quick
# when nothing changed: the venv is rebuilt only when the pinned list does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AURUM_CI_VENV:-$HOME/.cache/aurum-ci/venv}"
requirements=scripts/deploy-tools.txt
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/.aurum-requirements"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/.aurum-requirements"
echo "deploy tools installed in $venv"
