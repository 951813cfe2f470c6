#!/usr/bin/env bash
# SET latency under --fsync always while the node replaces ~1 GB snapshots:
# 1M keys x 1000 B loaded, then `redis-benchmark -t set -c 10 -n 1200000`
# while three snapshots are taken (each replaces the last, whose ~1 GB is
# freed). Prints redis-benchmark's latency summary (the max is the stall)
# and the disk's discard time. Compare binaries by running it with each.
# usage: bench/snapshot-free-stall.sh [tessera binary, default target/release/tessera]
# Traffic stays on 127.0.0.1; stops by itself.
set -euo pipefail
BIN=${1:-target/release/tessera}
PORT=${STALL_PORT:-7501} ADMIN=$((PORT + 1))
D=$(mktemp -d /var/tmp/tessera-stall.XXXXXX)
source "$(dirname "${BASH_SOURCE[0]}")/stall-lib.sh"
stall_node "$BIN" "$PORT" "$ADMIN" "$D"
stall_load "$PORT"
curl -fsS -XPOST "127.0.0.1:$ADMIN/v1/snapshot" >/dev/null; sync; sleep 8; sync
d1=$(disc_ms)
redis-benchmark -p "$PORT" -t set -n 1200000 -c 10 -d 64 -r 1000000 > "$D/bench.txt" 2>&1 &
BP=$!
sleep 2
for _ in 1 2 3; do curl -fsS -XPOST "127.0.0.1:$ADMIN/v1/snapshot" >/dev/null; sleep 3; done
wait "$BP"
d2=$(disc_ms)
echo "$BIN: latency ms (avg min p50 p95 p99 max): $(grep -A2 'latency summary' "$D/bench.txt" | tail -1 | tr -s ' ')"
echo "  $(grep 'throughput summary' "$D/bench.txt"); disk discarding: $((d2 - d1)) ms"
