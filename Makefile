# The two commands that matter: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
DB_NAME ?= aurum
SEED_PROFILES ?= 100000
# Where cargo puts binaries (honours CARGO_TARGET_DIR, as cargo does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
AURUM := $(TARGET_DIR)/release/aurum

.PHONY: help run cluster test lint fmt build release web screenshots bench-profiles bench-ws bench-cluster soak soak-delivery reliability fuzz-api fuzz

# The web client (web/): its sources and lockfile; web/dist is rebuilt when
# any of them is newer than the last build.
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json web/package.json

help:
	@echo "make run             start PostgreSQL if needed, migrate, seed $(SEED_PROFILES) profiles, serve"
	@echo "make cluster         like run, with Redis (started if none answers) and two nodes: a on 8080/8081, b on 8090/8091"
	@echo "make test            start PostgreSQL if needed, run every test"
	@echo "make web             build the web client (web/ -> web/dist, served at / by aurum serve)"
	@echo "make screenshots     the web client at desktop and phone width -> docs/web-*.png"
	@echo "make lint            cargo fmt --check and clippy -D warnings"
	@echo "make bench-profiles  profile API benchmark on 1,000,000 profiles -> docs/benchmarks.md"
	@echo "make bench-ws        Socket.IO benchmark: idle sockets, chat rates, replay -> docs/benchmarks.md"
	@echo "                     (BENCH_WS_ONLY=replay make bench-ws: the replay alone)"
	@echo "make bench-cluster   chat across nodes beside a Node.js Socket.IO + Redis adapter pair, and 100,000"
	@echo "                     sockets on 6 nodes with one Redis -> docs/benchmarks.md"
	@echo "                     (BENCH_CLUSTER_ONLY=chat or =capacity, BENCH_CLUSTER_SOCKETS=6000: quicker)"
	@echo "make soak            30 min of socket churn and REST load on two nodes: RSS -> docs/soak.csv, .png, benchmarks.md"
	@echo "                     (SOAK_MINUTES, SOAK_MEMBERS; SOAK_WATERMARK=low: node b's supervisor acts)"
	@echo "make reliability     every test, recording the hardening cases -> docs/reliability.md"
	@echo "make soak-delivery   the randomized delivery test, longer: DELIVERY_SEEDS (20) runs of DELIVERY_SECS (15) each"
	@echo "make fuzz-api        schemathesis against a live node's /api/v1/openapi.json, every check -> docs/fuzz.md"
	@echo "                     (FUZZ_API_EXAMPLES: examples per operation and phase, 50)"
	@echo "make fuzz            cargo fuzz (nightly) on the decoders, FUZZ_SECONDS (60) per target -> docs/fuzz.md;"
	@echo "                     fails on a crash (FUZZ_TARGETS=ws_reader,cursor: only those)"

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin aurum

run: release web
	@if [ -z "$${DATABASE_URL:-}" ]; then export DATABASE_URL="$$(scripts/ensure-postgres.sh)/$(DB_NAME)"; fi; \
	$(AURUM) migrate --create-database; \
	$(AURUM) seed --profiles $(SEED_PROFILES) --if-empty; \
	token=$$($(AURUM) token --dev --user 1); \
	echo; \
	echo "The web client, signed in as member 1 (another window: sign in there as another member):"; \
	echo "  http://$${BIND:-127.0.0.1:8080}/#token=$$token"; \
	echo; \
	echo "A development token for user 1 (valid 24 h):"; \
	echo "  $$token"; \
	echo "Try:"; \
	echo "  curl -H 'Authorization: Bearer $$token' 'http://127.0.0.1:8080/api/v1/matching/profiles/scroll?gender=female&min_age=25&max_age=35&limit=5'"; \
	echo "  curl -H 'Authorization: Bearer $$token' 'http://127.0.0.1:8080/api/v1/matching/profiles/batch?profile_ids=2,3,4'"; \
	echo "  curl http://127.0.0.1:8080/health"; \
	echo; \
	exec $(AURUM) serve --dev

cluster: release
	@if [ -z "$${DATABASE_URL:-}" ]; then export DATABASE_URL="$$(scripts/ensure-postgres.sh)/$(DB_NAME)"; fi; \
	$(AURUM) migrate --create-database; \
	$(AURUM) seed --profiles $(SEED_PROFILES) --if-empty; \
	exec scripts/cluster.sh $(AURUM)

# Tests make their own databases (cloned from a migrated template) on the
# server found or started here; nextest runs them in parallel processes when
# installed, cargo test in parallel threads otherwise.
test: tests/e2e/node_modules/.package-lock.json web
	cd web && npx vitest run
	@export AURUM_TEST_PG="$${AURUM_TEST_PG:-$$(scripts/ensure-postgres.sh)}"; \
	echo "tests use PostgreSQL at $$AURUM_TEST_PG"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

# The official socket.io-client for the end-to-end test, pinned by the lockfile.
tests/e2e/node_modules/.package-lock.json: tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund

# The web client: TypeScript, React and Vite from web/package-lock.json,
# built ahead into web/dist (no Node at run time).
web: web/dist/index.html

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

# Both pages at desktop and phone width, taken by the browser test.
screenshots: web
	@export AURUM_TEST_PG="$${AURUM_TEST_PG:-$$(scripts/ensure-postgres.sh)}"; \
	AURUM_SCREENSHOTS="$(CURDIR)/docs" $(CARGO) test --test integration -- --exact web::the_web_client_works_in_a_real_browser

lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

bench-profiles: release
	@export AURUM_BENCH_PG="$${AURUM_BENCH_PG:-$$(scripts/ensure-postgres.sh)}"; \
	scripts/bench-profiles.sh

# Idle sockets (RSS per socket, sockets/s), chat at rising rates and a
# replay storm, with the load generator (loadgen/, release); a few minutes.
# BENCH_WS_ONLY=idle,chat,replay (any subset) runs only those parts.
bench-ws: release
	$(CARGO) build --release -p aurum-loadgen
	@export AURUM_BENCH_PG="$${AURUM_BENCH_PG:-$$(scripts/ensure-postgres.sh)}"; \
	python3 scripts/bench_ws.py

# Two nodes and a private Redis against a Node.js Socket.IO pair on the
# Redis adapter (bench/peer/, installed here with npm ci from its lockfile),
# chat at rising rates; then 100,000 sockets on 6 nodes and one Redis.
# BENCH_CLUSTER_ONLY=chat,capacity (any subset) runs only those parts.
bench-cluster: release bench/peer/node_modules/.package-lock.json
	$(CARGO) build --release -p aurum-loadgen
	@export AURUM_BENCH_PG="$${AURUM_BENCH_PG:-$$(scripts/ensure-postgres.sh)}"; \
	python3 scripts/bench_cluster.py

bench/peer/node_modules/.package-lock.json: bench/peer/package-lock.json
	cd bench/peer && npm ci --no-audit --no-fund

# Socket churn (the official client, default options) and REST load on two
# nodes and a private Redis; each node's RSS every 10 s; see scripts/soak.py.
soak: release tests/e2e/node_modules/.package-lock.json
	@export AURUM_BENCH_PG="$${AURUM_BENCH_PG:-$$(scripts/ensure-postgres.sh)}"; \
	python="$$(scripts/soak-tools.sh)"; \
	"$$python" scripts/soak.py

# The randomized delivery test of `make test` (tests/it/delivery.rs), with
# more seeds for longer: every recipient must end with every committed
# message of its conversations, none out of order on a connection.
soak-delivery: tests/e2e/node_modules/.package-lock.json
	@export AURUM_TEST_PG="$${AURUM_TEST_PG:-$$(scripts/ensure-postgres.sh)}"; \
	export DELIVERY_SEEDS="$${DELIVERY_SEEDS:-20}" DELIVERY_SECS="$${DELIVERY_SECS:-15}"; \
	$(CARGO) test --test integration -- --nocapture --exact delivery::no_message_is_skipped_across_random_reconnects

# Every test, with the hardening tests recording each case they try (bad
# input, abuse, faults) into one file; docs/reliability.md is made from it.
reliability: tests/e2e/node_modules/.package-lock.json web
	@export AURUM_TEST_PG="$${AURUM_TEST_PG:-$$(scripts/ensure-postgres.sh)}"; \
	out="$$(mktemp)"; \
	command="make reliability"; \
	if AURUM_RELIABILITY_OUT="$$out" $(CARGO) nextest run --workspace --no-fail-fast; then \
		result="every test passed"; \
	else \
		result="SOME TESTS FAILED (see the run's output)"; \
	fi; \
	python3 scripts/reliability.py "$$out" docs/reliability.md "$$command" "$$result"; \
	rm -f "$$out"

# schemathesis (in a venv outside the repository) against one live node,
# driven by the document the node serves: no 5xx, every response as
# documented; figures -> docs/fuzz.md. Not part of `make test`, which has
# the document's own test (tests/it/openapi.rs).
fuzz-api:
	@CARGO="$(CARGO)" scripts/fuzz-api.sh

# The decoders a client reaches (Engine.IO, Socket.IO, WebSocket frames,
# cursors) under libFuzzer for FUZZ_SECONDS each, with the nightly
# toolchain and cargo-fuzz (installed here if missing); see scripts/fuzz.py.
# Not part of `make test`; the crashes it found are, as regression tests.
fuzz:
	@if ! $(CARGO) fuzz --version >/dev/null 2>&1; then $(CARGO) install cargo-fuzz --locked; fi
	CARGO="$(CARGO)" python3 scripts/fuzz.py
