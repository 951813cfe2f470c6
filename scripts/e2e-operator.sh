#!/usr/bin/env bash
# Operator end-to-end tests on the local cluster (assumed up: make cluster-up).
# Builds and imports the image (cached by content), installs the chart with
# two operator replicas, checks the generated files against the chart, and
# runs tests/e2e_operator.rs. Ends with `N passed, M failed`.
#   TESSERA_E2E_CLUSTERS=N   clusters for the scale measurement (default 50, 0 skips)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"
passed=0; failed=0
result() { if [[ $1 == 0 ]]; then passed=$((passed+1)); echo "PASS $2"; else failed=$((failed+1)); echo "FAIL $2"; fi; }

e2e_require_cluster

e2e/image.sh >&2; rc=$?; result $rc "image built and imported"
[[ $rc == 0 ]] || { echo "$passed passed, $failed failed"; exit 1; }
image=$(cat e2e/.run/image)

helm=$(scripts/find-helm.sh) || { result 1 "a helm binary (make cluster-up builds one)"; echo "$passed passed, $failed failed"; exit 1; }
# CRDs are not upgraded by Helm: apply the current one first.
kubectl apply --server-side --force-conflicts -f crds/databaseclusters.tessera.dev.yaml >&2
result $? "CRD applied"
"$helm" upgrade --install tessera charts/tessera --namespace "$ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set replicaCount=2 --set logLevel=info --wait --timeout 5m >&2
rc=$?; result $rc "helm install (2 operator replicas, $image)"
[[ $rc == 0 ]] || { echo "$passed passed, $failed failed"; exit 1; }
# New image, same tag scheme: make sure the pods run this build.
kubectl rollout restart deployment/tessera -n "$ns" >&2 \
  && kubectl rollout status deployment/tessera -n "$ns" --timeout=180s >&2
rc=$?; result $rc "operator pods restarted on this build (rollout restart, rollout status)"
[[ $rc == 0 ]] || { echo "$passed passed, $failed failed"; exit 1; }
"$helm" lint charts/tessera >&2; result $? "helm lint"

HELM=$helm cargo test --quiet --locked --test operator_crd --test monitoring >&2
result $? "CRD, chart, install.yaml and monitoring files in sync"

out=$(mktemp)
TESSERA_E2E=1 timeout "${TESSERA_E2E_TIMEOUT:-2400}" \
  cargo test --quiet --locked --test e2e_operator -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
if [[ -n $line ]]; then
  passed=$((passed + $(awk '{print $1}' <<<"$line"))); failed=$((failed + $(awk '{print $3}' <<<"$line")))
else
  failed=$((failed+1)); echo "FAIL e2e_operator did not finish"
fi
rm -f "$out"
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=40 2>/dev/null | tail -40 >&2 || true
fi
echo "$passed passed, $failed failed"
(( failed == 0 ))
