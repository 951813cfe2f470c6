#!/usr/bin/env bash
# make bench-failover: time-to-writable over N (default 10) failovers of a
# 3x3 quorum cluster on the local Kubernetes (make cluster-up first), with a
# writer recording every acknowledged write; alternates a force-deleted
# primary pod and a hung (SIGSTOP) primary process, rotating the shard.
# Prints a markdown table and ends with `RESULT key=value ...`.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-${FAILOVER_ROUNDS:-10}}
out=$(mktemp)
TESSERA_FAILOVER_BENCH=$rounds scripts/e2e-failover.sh 2>/dev/null | tee "$out" >/dev/null
grep -E '^(round |\||FAIL )' "$out"
rc=0; grep -q '^RESULT .*lost=0 ' "$out" || rc=1
grep '^RESULT ' "$out" | tail -1 || echo "RESULT rounds=0 error=did_not_finish"
rm -f "$out"
exit $rc
