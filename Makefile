# Tessera — the two commands that matter:
#   make up     a local real Kubernetes with Tessera running on it (see README)
#   make test   everything CI runs
#
# Heavy parts run alone too: make test-unit, make lint, make e2e, make bench-node.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# CI builds in a fresh clone every time: keep its cargo target directory in
# the machine's cache so a second run recompiles only what changed.
ifdef CI
export CARGO_TARGET_DIR ?= $(HOME)/.cache/tessera/ci-target
endif

.PHONY: all build release deps test test-unit test-apps lint e2e e2e-operator e2e-failover e2e-backup e2e-resharding e2e-security e2e-nodes generate up down bench-node bench-tls bench-replication bench-backup bench-failover bench-resharding bench-migration test-migration-big fuzz fuzz-smoke clean cold-check

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --release --locked

# Debian packages the tests use (redis-cli, redis-benchmark and redis-server
# for compatibility checks and side-by-side benchmarks), and helm for the
# chart tests (built once from the Go module proxy: the e2e cluster's build,
# e2e/build.sh helm). Idempotent.
deps:
	@scripts/deps.sh

# Everything CI runs: lint, unit + process-level tests, then the end-to-end
# smoke test on a real local Kubernetes (built from source and cached in
# ~/.cache/tessera on the first run).
test: deps lint test-unit fuzz-smoke e2e

test-unit: deps
	$(CARGO) test --locked -- --test-threads=2
	cp Cargo.lock fuzz/Cargo.lock
	$(CARGO) test --manifest-path fuzz/Cargo.toml

# Real application libraries on real nodes (tests/apps.rs): BullMQ on a
# 3-shard cluster, also across a primary failover, and Celery on one shard. They
# install their npm and PyPI dependencies themselves (pinned in tests/apps/);
# `cargo test` runs them too; this target runs only them.
test-apps: deps
	$(CARGO) test --locked --test apps -- --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml -- --check
	cp Cargo.lock fuzz/Cargo.lock
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets --features libfuzzer -- -D warnings

# Coverage-guided fuzzing on the stable toolchain (libFuzzer; docs/testing.md):
# every target for FUZZ_SECONDS each; fails on a crash (panic, allocation
# cap, timeout). make test runs each briefly from the checked-in seeds.
FUZZ_SECONDS ?= 120
FUZZ_SMOKE_SECONDS ?= 20
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) fuzz/run.sh

# End-to-end on a real local Kubernetes: bring the cluster up (building what
# is missing), run the smoke test, the operator, failover and backup suites,
# and always bring the cluster down again. Each suite ends with
# `N passed, M failed`; the target fails if any suite failed.
E2E_SUITES ?= e2e-smoke e2e-operator e2e-failover e2e-backup e2e-resharding e2e-security e2e-nodes
e2e:
	@status=0; \
	$(MAKE) --no-print-directory cluster-up || status=$$?; \
	if [ $$status -eq 0 ]; then \
	  for suite in $(E2E_SUITES); do \
	    echo ">>> $$suite"; \
	    $(MAKE) --no-print-directory $$suite || { echo ">>> $$suite FAILED"; status=1; }; \
	  done; \
	fi; \
	$(MAKE) --no-print-directory cluster-down || true; \
	exit $$status

# The operator suite measures 50 clusters when run alone; CI measures 10.
e2e-operator:
	TESSERA_E2E_CLUSTERS=$${TESSERA_E2E_CLUSTERS:-$(if $(CI),10,50)} scripts/e2e-operator.sh

e2e-failover:
	scripts/e2e-failover.sh

# Whole Kubernetes nodes: two more nodes (zone-b, zone-c) beside the host's;
# a node frozen, cut off, drained, a zone cut off, a node gone for good.
e2e-nodes:
	scripts/e2e-nodes.sh

# 3 → 4 → 2 → 3 shards under a client, a source primary and the operator
# killed mid-move, a scale-in refused for memory.
e2e-resharding:
	scripts/e2e-resharding.sh

# Backups to a PVC and to S3 (versitygw on the pod network's host address),
# restore latest and to a point in time, a corrupted backup, retention.
e2e-backup:
	scripts/e2e-backup.sh

# docs/security.md on the cluster: the admin API refused from another
# namespace and the NetworkPolicy enforced (kube-router), the metrics port,
# TLS and the generated password with redis-cli, TLS replication.
e2e-security:
	scripts/e2e-security.sh

generate:
	scripts/generate.sh

up: cluster-up image
	@scripts/up.sh

down: cluster-down

# The cold path of `make up` (COLD_TEST=1: and of CI's `make test`) from a
# fresh clone with every cache empty, timed per step. See e2e/README.md.
cold-check:
	scripts/cold-check.sh

bench-node: deps
	bench/node.sh

# TLS port vs redis-server --tls-port, redis-benchmark --tls (bench/tls.py).
bench-tls: deps
	bench/tls.sh

bench-replication: deps
	bench/replication.sh

# Backup and restore throughput vs a raw copy of the same bytes (~1 GB).
bench-backup: deps
	bench/backup.sh

# Slot migration: ~1 GB, half the slots to an empty node, idle and under a
# redis-benchmark load, against redis-cli --cluster reshard on redis-server
# (BENCH_MIGRATION_MB=… for a smaller run).
bench-migration: deps
	bench/migration.sh

# The slot-migration test too slow for every cargo test: a 1M-member sorted
# set and a 1M-field hash move while a client measures the source's stalls.
test-migration-big:
	$(CARGO) test --locked --test migration_data -- --ignored --test-threads=1

# Time-to-writable over 10 failovers of a 3x3 quorum cluster on the local
# Kubernetes (starts it if needed; leaves it up).
bench-failover:
	$(MAKE) --no-print-directory cluster-up
	bench/failover.sh

bench-resharding:
	$(MAKE) --no-print-directory cluster-up
	bench/resharding.sh

clean:
	$(CARGO) clean

include e2e/e2e.mk
