# Tessera — the two commands that matter:
#   make up     a local real Kubernetes with Tessera running on it (see README)
#   make test   everything CI runs
#
# Heavy parts run alone too: make test-unit, make lint, make e2e, make bench-node.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build release deps test test-unit lint e2e up down bench-node bench-replication bench-backup bench-failover fuzz clean

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --release --locked

# Debian packages the tests use (redis-cli, redis-benchmark and redis-server
# for compatibility checks and side-by-side benchmarks). Idempotent.
deps:
	@scripts/deps.sh

# Everything CI runs: lint, unit + process-level tests, then the end-to-end
# smoke test on a real local Kubernetes (built from source and cached in
# ~/.cache/tessera on the first run).
test: deps lint test-unit e2e

test-unit: deps
	$(CARGO) test --locked -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# End-to-end: bring the cluster up (building what is missing), run the smoke
# test, always bring it down again.
e2e:
	@set -o pipefail; status=0; \
	$(MAKE) --no-print-directory cluster-up && $(MAKE) --no-print-directory e2e-smoke || status=$$?; \
	$(MAKE) --no-print-directory cluster-down || true; \
	exit $$status

up: cluster-up image
	@scripts/up.sh

down: cluster-down

bench-node: deps
	bench/node.sh

bench-replication: deps
	bench/replication.sh

# Backup and restore throughput vs a raw copy of the same bytes (~1 GB).
bench-backup: deps
	bench/backup.sh

# Time-to-writable over 10 failovers of a 3x3 quorum cluster on the local
# Kubernetes (starts it if needed; leaves it up).
bench-failover:
	$(MAKE) --no-print-directory cluster-up
	bench/failover.sh

clean:
	$(CARGO) clean

include e2e/e2e.mk
