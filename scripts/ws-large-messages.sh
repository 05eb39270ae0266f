#!/usr/bin/env bash
# Server RSS before and after N sockets each send one large message, and
# after they close: what the read buffers keep (see ws_large_messages.mjs).
# Needs the release binary, `npm ci` in tests/e2e, and a database with
# profiles 1..N (the bench-ws one by default).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
size=${2:-90000}
secret=large-messages-secret-0123456789abcdef
target=${CARGO_TARGET_DIR:-target}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/aurum_bench_ws}
JWT_SECRET=$secret BIND=127.0.0.1:18480 WS_BIND=127.0.0.1:18481 RUST_LOG=warn WS_MAX_PAYLOAD=200000 \
  "$target/release/aurum" serve &
server=$!
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
mkfifo "$work/ctl"
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
node scripts/ws_large_messages.mjs http://127.0.0.1:18481 "$n" "$size" "$secret" <"$work/ctl" >"$work/out" &
exec 3>"$work/ctl"
wait_for() { for _ in $(seq 120); do grep -q "$1" "$work/out" && return; sleep 0.5; done; echo "no $1" >&2; exit 1; }
wait_for connected; sleep 2
echo "$n sockets connected: RSS $(rss) KiB"
echo go >&3; wait_for sent; sleep 3
echo "each sent one $size-character message: RSS $(rss) KiB"
sleep 10
echo "10 s later, sockets idle: RSS $(rss) KiB"
echo go >&3; exec 3>&-; sleep 2
echo "sockets closed: RSS $(rss) KiB"
