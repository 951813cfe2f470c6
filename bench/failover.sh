#!/usr/bin/env bash
# make bench-failover: time-to-writable over N (default 20) hung-primary
# (SIGSTOP) failovers of a 3x3 quorum cluster on the local Kubernetes (make
# cluster-up first), the shard rotating, with a cluster client recording
# every acknowledged write and the operator's breakdown of each failover,
# and redis-py's RedisCluster and redis-cli writing beside it;
# then N/5 force-deleted primaries, reported apart (restarts); then N/4
# node losses (a whole Kubernetes node frozen under a primary, on three
# nodes: scripts/e2e-nodes.sh's bench mode). Prints the tables and ends with
# one `RESULT key=value ...` line for all three.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-${FAILOVER_ROUNDS:-20}}
node_rounds=${NODE_LOSS_ROUNDS:-$(( rounds / 4 > 0 ? rounds / 4 : 1 ))}
out=$(mktemp) nodes_out=$(mktemp)
# redis-py for the second client (bench/failover_clients.py; redis-cli is
# the third), in a venv from the pinned requirements.
venv=${CARGO_TARGET_DIR:-target}/bench-venv
if ! cmp -s bench/requirements.txt "$venv/.requirements"; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q -r bench/requirements.txt \
    && cp bench/requirements.txt "$venv/.requirements" \
    || { echo "FAIL installing redis-py (bench/requirements.txt)"; exit 1; }
fi
export TESSERA_BENCH_PYTHON=$(cd "$venv" && pwd)/bin/python
TESSERA_FAILOVER_BENCH=$rounds scripts/e2e-failover.sh 2>/dev/null | tee "$out" >/dev/null
grep -E '^(round |restart |\||Hung|Force|FAIL )' "$out"
TESSERA_NODES_BENCH=$node_rounds scripts/e2e-nodes.sh 2>/dev/null | tee "$nodes_out" >/dev/null
echo "Node loss (a Kubernetes node frozen under a primary; 3 nodes, 3x3 quorum, zones):"
grep -E '^(\||FAIL )' "$nodes_out"
rc=0
grep -q '^RESULT .*acked_lost=0 ' "$out" || rc=1
grep -q '^RESULT .*node_loss_acked_lost=0' "$nodes_out" || rc=1
main=$(grep '^RESULT ' "$out" | tail -1)
node=$(grep '^RESULT ' "$nodes_out" | tail -1)
[[ -n $main ]] || main="RESULT rounds=0 error=did_not_finish"
[[ -n $node ]] || node="RESULT node_losses=0 node_loss_error=did_not_finish"
echo "$main ${node#RESULT }"
rm -f "$out" "$nodes_out"
exit $rc
