#!/usr/bin/env bash
# `make cluster`: Redis (started here when none answers on 127.0.0.1:6379)
# and two nodes on one database, for trying cross-node chat by hand.
#   node a: REST 127.0.0.1:8080, sockets 127.0.0.1:8081
#   node b: REST 127.0.0.1:8090, sockets 127.0.0.1:8091
# Ctrl-C stops both nodes (and the Redis started here).
set -euo pipefail
aurum="$1"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379/}"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
if ! redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || { echo "no Redis answers at $redis_url and redis-server is not installed" >&2; exit 1; }
  dir="$(mktemp -d)"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -u "$redis_url" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "started redis-server on 127.0.0.1:6379 (log: $dir/redis.log)"
fi
export REDIS_URL="$redis_url"
BIND=127.0.0.1:8080 WS_BIND=127.0.0.1:8081 NODE_ID=a "$aurum" serve --dev &
pids+=($!)
BIND=127.0.0.1:8090 WS_BIND=127.0.0.1:8091 NODE_ID=b MIGRATE_ON_START=false "$aurum" serve --dev &
pids+=($!)
echo "node a: http://127.0.0.1:8080 ws://127.0.0.1:8081   node b: http://127.0.0.1:8090 ws://127.0.0.1:8091"
echo "tokens: $("$aurum" token --dev --user 1) (user 1), $("$aurum" token --dev --user 2) (user 2)"
wait -n "${pids[@]}"
