#!/usr/bin/env bash
# make bench-replication: one unreplicated node, RF=3 in eventual / quorum /
# strong, and redis-server + 1 replica with WAIT 1 0 after every write, all
# driven by the same load generator (bench/replication.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec python3 bench/replication.py "$@"
