#!/usr/bin/env bash
# make bench-backup: backup and restore throughput for a ~1 GB data set
# against a raw copy of the same bytes on the same disk (bench/backup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec python3 bench/backup.py "$@"
