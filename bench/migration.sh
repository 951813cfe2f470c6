#!/usr/bin/env bash
# make bench-migration: online slot migration between two release nodes vs
# redis-cli --cluster reshard between two redis-server cluster nodes, on
# the same data, idle and under a redis-benchmark load (bench/migration.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec python3 bench/migration.py "$@"
