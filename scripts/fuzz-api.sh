#!/usr/bin/env bash
# `make fuzz-api`: schemathesis against a live node, driven by the node's
# own /api/v1/openapi.json. A debug build on a database of its own
# (dropped and made anew each run), seeded, with an admin member's token
# so every operation is reachable. Fails on any failed check (a 5xx, a
# response the document does not describe, ...). The run's figures go to
# docs/fuzz.md between the fuzz-api markers.
#   FUZZ_API_EXAMPLES   examples per operation and phase (default 50)
#   FUZZ_API_PROFILES   profiles seeded (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${FUZZ_API_EXAMPLES:-50}"
seed_profiles="${FUZZ_API_PROFILES:-2000}"
target="${CARGO_TARGET_DIR:-target}"
aurum="$target/debug/aurum"
say() { echo "fuzz-api: $*" >&2; }

schemathesis="$(scripts/fuzz-api-tools.sh)"
"${CARGO:-cargo}" build --bin aurum

pg="$(scripts/ensure-postgres.sh)"
db=aurum_fuzz_api
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
export DATABASE_URL="$pg/$db"
export JWT_SECRET="fuzz-api-$(date +%s%N)"
"$aurum" migrate --create-database
"$aurum" seed --profiles "$seed_profiles"
# Member 1 with the admin role: the admin route is tried past its 403.
token="$("$aurum" token --user 1 --admin --ttl 3600)"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
bind="127.0.0.1:$(free_port)"
log="$(mktemp -t aurum-fuzz-api.XXXXXX.log)"
BIND="$bind" WS_BIND="127.0.0.1:$(free_port)" RUST_LOG="${RUST_LOG:-warn}" \
  "$aurum" serve >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://$bind/health/ready" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; say "the node did not start"; exit 1; }
  sleep 0.2
done

report_dir="$(mktemp -d -t aurum-fuzz-api.XXXXXX)"
command=("$schemathesis" --config-file scripts/fuzz-api.toml run "http://$bind/api/v1/openapi.json"
  --checks all
  --max-examples "$examples"
  --header "Authorization: Bearer \$TOKEN"
  --seed 1
  --generation-database none
  --workers 1
  --report json --report-json-path "$report_dir/run.json"
  --no-color)
say "${command[*]}"
started=$(date +%s)
status=0
"${command[@]/\$TOKEN/$token}" | tee "$report_dir/output.txt" || status=$?
duration=$(( $(date +%s) - started ))

# The node's own log: a panic or an error there is a finding too (not
# actix's notice of a request line or header it could not parse: those
# are the fuzzer's malformed requests, answered 400).
if grep -E "panicked|ERROR" "$log" | grep -v "request parse error" >&2; then
  say "the node logged errors (above)"
  status=1
fi

python3 scripts/fuzz_api_report.py \
  --json "$report_dir/run.json" --output "$report_dir/output.txt" \
  --status "$status" --duration "$duration" --examples "$examples" \
  --profiles "$seed_profiles" --version "$("$schemathesis" --version | tail -n 1)" \
  --command "${command[*]}" --doc docs/fuzz.md
exit "$status"
