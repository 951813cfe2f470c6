#!/usr/bin/env bash
# make bench-node: Tessera node vs redis-server (see bench/node.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec python3 bench/node.py "$@"
