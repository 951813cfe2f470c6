#!/usr/bin/env bash
# Failover end-to-end tests on the local cluster (assumed up: make cluster-up).
# Builds and imports the image (cached by content), installs the chart with
# two operator replicas and runs tests/e2e_failover.rs. Ends with
# `N passed, M failed`.
#   TESSERA_E2E_ONLY=kill,delete,hang,operator,blocked,strong,eventual   a subset
#   TESSERA_FAILOVER_BENCH=N   run N failovers of a 3x3 quorum cluster instead (make bench-failover)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export KUBECONFIG=${KUBECONFIG:-$root/e2e/.run/kubeconfig}
export PATH="$root/e2e/.run/bin:$PATH"
export KUBECTL=${KUBECTL:-$root/e2e/.run/bin/kubectl}
ns=tessera-system

if ! kubectl get nodes >/dev/null 2>&1; then
  echo "the cluster is not reachable (KUBECONFIG=$KUBECONFIG); run make cluster-up" >&2
  echo "0 passed, 1 failed"; exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "the failover tests signal the pods' processes from the host: run as root" >&2
  echo "0 passed, 1 failed"; exit 1
fi

e2e/image.sh >&2 || { echo "FAIL image"; echo "0 passed, 1 failed"; exit 1; }
image=$(cat e2e/.run/image)
helm=$(scripts/find-helm.sh)
kubectl apply --server-side --force-conflicts -f crds/databaseclusters.tessera.dev.yaml >&2
"$helm" upgrade --install tessera charts/tessera --namespace "$ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set replicaCount=2 --set logLevel=info --wait --timeout 5m >&2 \
  || { echo "FAIL helm install"; echo "0 passed, 1 failed"; exit 1; }
kubectl rollout restart deployment/tessera -n "$ns" >&2 && kubectl rollout status deployment/tessera -n "$ns" --timeout=180s >&2

out=$(mktemp)
TESSERA_E2E=1 timeout "${TESSERA_E2E_TIMEOUT:-1800}" \
  cargo test --quiet --locked --test e2e_failover -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_failover did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=60 --prefix 2>/dev/null | grep -iE "failover|promot|fenc|blocked" | tail -40 >&2 || true
fi
(( failed == 0 ))
