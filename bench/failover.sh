#!/usr/bin/env bash
# make bench-failover: time-to-writable over N (default 20) hung-primary
# (SIGSTOP) failovers of a 3x3 quorum cluster on the local Kubernetes (make
# cluster-up first), the shard rotating, with a cluster client recording
# every acknowledged write and the operator's breakdown of each failover;
# then N/5 force-deleted primaries, reported apart (restarts). Prints the
# tables and ends with `RESULT key=value ...`.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-${FAILOVER_ROUNDS:-20}}
out=$(mktemp)
TESSERA_FAILOVER_BENCH=$rounds scripts/e2e-failover.sh 2>/dev/null | tee "$out" >/dev/null
grep -E '^(round |restart |\||Hung|Force|FAIL )' "$out"
rc=0; grep -q '^RESULT .*acked_lost=0 ' "$out" || rc=1
grep '^RESULT ' "$out" | tail -1 || echo "RESULT rounds=0 error=did_not_finish"
rm -f "$out"
exit $rc
