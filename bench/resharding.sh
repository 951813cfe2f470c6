#!/usr/bin/env bash
# make bench-resharding: a 3x2 quorum cluster on the local Kubernetes loaded
# with RESHARD_MB MiB (default 1024) of 1 KiB values; 3 → 4 and 4 → 3 shards,
# idle and under 4 clients, timed from the manifest change to Ready; client
# p50/p99 before and during; every acknowledged write read back. Prints a
# markdown table and ends with `RESULT key=value ...`.
set -uo pipefail
cd "$(dirname "$0")/.."
mb=${1:-${RESHARD_MB:-1024}}
out=$(mktemp)
TESSERA_RESHARD_BENCH=$mb TESSERA_E2E_TIMEOUT=5400 scripts/e2e-resharding.sh 2>/dev/null | tee "$out" >/dev/null
grep -E '^(loaded|idle|\||FAIL )' "$out"
rc=0; grep -q '^RESULT .*acked_lost=0$' "$out" || rc=1
grep '^RESULT ' "$out" | tail -1 || echo "RESULT data_mb=$mb error=did_not_finish"
rm -f "$out"
exit $rc
