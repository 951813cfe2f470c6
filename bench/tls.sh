#!/usr/bin/env bash
# make bench-tls: Tessera's TLS port vs redis-server's TLS (see bench/tls.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec python3 bench/tls.py "$@"
