#!/usr/bin/env bash
# Backup and restore end-to-end tests on the local cluster (assumed up: make
# cluster-up). Builds and imports the image (cached by content), installs the
# chart, starts a real S3 server (versitygw, scripts/s3-server.sh) on the pod
# network's host address so pods reach it, and runs tests/e2e_backup.rs
# (PVC and S3 targets side by side). Ends with `N passed, M failed`.
#   TESSERA_E2E_ONLY=pvc|s3        one target only
#   TESSERA_E2E_S3_PORT=17480      the S3 server's port on 198.18.0.1
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export KUBECONFIG=${KUBECONFIG:-$root/e2e/.run/kubeconfig}
export PATH="$root/e2e/.run/bin:$PATH"
export KUBECTL=${KUBECTL:-$root/e2e/.run/bin/kubectl}
ns=tessera-system
start=$SECONDS

if ! kubectl get nodes >/dev/null 2>&1; then
  echo "the cluster is not reachable (KUBECONFIG=$KUBECONFIG); run make cluster-up" >&2
  echo "0 passed, 1 failed"; exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "the backup tests read and corrupt backups on the volumes' host paths: run as root" >&2
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

# S3: versitygw on the bridge address (198.18.0.1, the node IP), which pods
# reach directly; bucket "backups" is a directory of its posix backend.
port=${TESSERA_E2E_S3_PORT:-17480}
s3dir=$(mktemp -d /tmp/tessera-e2e-s3.XXXXXX)
mkdir -p "$s3dir/data/backups"
s3pid=$(scripts/s3-server.sh start "$s3dir/data" "198.18.0.1:$port") \
  || { echo "FAIL s3 server"; echo "0 passed, 1 failed"; exit 1; }
cleanup() { kill "$s3pid" 2>/dev/null; wait "$s3pid" 2>/dev/null; rm -rf "$s3dir"; }
trap cleanup EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/198.18.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

out=$(mktemp)
TESSERA_E2E=1 TESSERA_E2E_S3_ENDPOINT="http://198.18.0.1:$port" TESSERA_E2E_S3_DATA="$s3dir/data" \
  timeout "${TESSERA_E2E_TIMEOUT:-1200}" \
  cargo test --quiet --locked --test e2e_backup -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_backup did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=200 --prefix 2>/dev/null \
    | grep -iE "restore|backup" | tail -40 >&2 || true
fi
echo "e2e-backup: $((SECONDS - start))s (image, chart and tests)"
(( failed == 0 ))
