#!/usr/bin/env bash
# `make up` (after `make cluster-up image`): install the operator with Helm,
# apply the minimal example, wait for it to be Ready, and show how to use it.
# Uses $KUBECONFIG when set, else the local e2e cluster's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export KUBECONFIG=${KUBECONFIG:-$root/e2e/.run/kubeconfig}
export PATH="$root/e2e/.run/bin:$PATH"
helm=$(scripts/find-helm.sh) || { echo "helm not found; run make cluster-up" >&2; exit 1; }
image=$(cat "$root/e2e/.run/image" 2>/dev/null) || { echo "no image; run make image" >&2; exit 1; }
ns=tessera-system

echo ">> installing the operator ($image) into $ns"
"$helm" upgrade --install tessera charts/tessera --namespace "$ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=IfNotPresent --wait --timeout 5m

echo ">> applying manifests/examples/minimal.yaml"
start=$SECONDS
kubectl apply -f manifests/examples/minimal.yaml
if ! kubectl wait databasecluster/demo -n default --for=condition=Ready --timeout=10m; then
  kubectl get dbc,pods -n default -o wide >&2 || true
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=50 >&2 || true
  exit 1
fi
echo ">> Ready after $((SECONDS - start))s"
kubectl get dbc -A
echo
# The binary from the image build (e2e/image.sh links it), so a cold
# `make up` compiles Tessera once.
tessera=$root/e2e/.run/bin/tessera
[[ -x $tessera ]] || { echo "no $tessera; run make image" >&2; exit 1; }
status=$("$tessera" status -n default demo)
echo "$status"
echo
# The generated password (<cluster>-auth), so the printed line works as is.
password=$(kubectl get secret -n default demo-auth -o jsonpath='{.data.password}' | base64 -d)
echo "From this host (pod IPs are routed here), with a cluster-aware client, e.g.:"
sed -n 's/^connect: //p' <<<"$status" | sed "s/\"\$PASSWORD\"/'$password'/"
echo "(the password is in Secret default/demo-auth; \`tessera status\` shows how to read it)"
echo "make down stops everything."
