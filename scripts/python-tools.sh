#!/usr/bin/env bash
# A venv outside the repository with a pinned requirements file installed;
# prints the venv's path. Quick when nothing changed: the venv is rebuilt
# only when the pinned list does. Shared by deploy-tools.sh, pyclient.sh,
# soak-tools.sh and fuzz-api-tools.sh.
#   scripts/python-tools.sh VENV REQUIREMENTS
set -euo pipefail
venv="$1"
requirements="$2"
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/.aurum-requirements"; then
  echo "$venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$venv/.aurum-requirements"
echo "Python tools of $requirements installed in $venv" >&2
echo "$venv"
