#!/usr/bin/env bash
# Node failures end-to-end: starts two more Kubernetes nodes beside the host
# node (e2e/nodes.sh: zone-b, zone-c), builds and imports the image,
# installs the chart with two operator replicas and runs tests/e2e_nodes.rs
# (a node frozen, cut off, drained, a zone cut off, a node powered off for
# good). Removes the extra nodes again at the end. Ends with
# `N passed, M failed`.
#   TESSERA_E2E_ONLY=spread,freeze,cut,strong,lost,drain,zone,operator,gone   a subset
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"

e2e_require_cluster
e2e_require_root "the suite freezes, cuts off and powers off Kubernetes nodes"

e2e/cluster.sh nodes 3 >&2 || e2e_abort "FAIL starting the extra nodes (e2e/cluster.sh nodes 3)"
e2e_install_operator

out=$(mktemp)
TESSERA_E2E=1 timeout "${TESSERA_E2E_TIMEOUT:-1800}" \
  cargo test --quiet --locked --test e2e_nodes -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_nodes did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=80 --prefix 2>/dev/null \
    | grep -iE "failover|switchover|rebuild|node" | tail -40 >&2 || true
fi
# The other suites expect the one host node (their pods' processes are
# found through its containerd).
kubectl delete ns tessera-e2e-nodes --wait=true --timeout=120s >/dev/null 2>&1 || true
if ! e2e/cluster.sh nodes 1 >&2; then
  echo "FAIL the extra nodes could not be removed (later suites expect the host node alone)" >&2
  failed=$((failed + 1))
fi
(( failed == 0 ))
