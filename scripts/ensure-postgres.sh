#!/usr/bin/env bash
# Prints the URL (without a database name) of a PostgreSQL server to use:
#   1. one already answering on 127.0.0.1:5432 (trust auth, user postgres);
#   2. else a private cluster under .dev/postgres on 127.0.0.1:55432, started
#      here, after installing Debian's postgresql when pg_ctl is missing.
# Progress goes to stderr; stdout carries only the URL.
# AURUM_PRIVATE_PG=1 skips step 1 (to exercise the fresh-machine path).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
private_dir="$root/.dev/postgres"
private_port=55432

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
say() { echo "ensure-postgres: $*" >&2; }

if [[ "${AURUM_PRIVATE_PG:-0}" != 1 ]] && port_open 5432; then
  echo "postgres://postgres@127.0.0.1:5432"
  exit 0
fi
if port_open "$private_port"; then
  echo "postgres://postgres@127.0.0.1:$private_port"
  exit 0
fi

find_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bindir=$(find_bindir)
if [[ -z "$bindir" ]]; then
  say "no PostgreSQL found; installing Debian's postgresql"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
  bindir=$(find_bindir)
fi

# initdb and postgres refuse to run as root: run them as the postgres user.
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  as_owner=(runuser -u postgres --)
fi

mkdir -p "$private_dir"
[[ $(id -u) -eq 0 ]] && chown postgres "$private_dir"
if [[ ! -f "$private_dir/data/PG_VERSION" ]]; then
  say "creating a private cluster in $private_dir"
  "${as_owner[@]}" "$bindir/initdb" -D "$private_dir/data" -U postgres -A trust -E UTF8 >&2
fi
say "starting the private cluster on 127.0.0.1:$private_port"
"${as_owner[@]}" "$bindir/pg_ctl" -D "$private_dir/data" -l "$private_dir/log" -w -t 60 \
  -o "-p $private_port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2
echo "postgres://postgres@127.0.0.1:$private_port"
