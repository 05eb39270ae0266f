#!/usr/bin/env bash
# `make bench-profiles`: the profile API against pgbench on the same SQL.
# Needs a release build (the Makefile builds it), wrk and pgbench (installed
# from Debian's packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v pgbench >/dev/null || need+=(postgresql-contrib)
if ((${#need[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
exec python3 scripts/bench_profiles.py "$@"
