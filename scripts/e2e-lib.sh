# shellcheck shell=bash
# Shared by the end-to-end suites (scripts/e2e-*.sh): sourced, not run.
# Sets the cluster's environment and offers the steps every suite begins with.
# A suite prints `N passed, M failed` last; a failed step here ends it with
# `0 passed, 1 failed`.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
root=$PWD
export KUBECONFIG=${KUBECONFIG:-$root/e2e/.run/kubeconfig}
export PATH="$root/e2e/.run/bin:$PATH"
export KUBECTL=${KUBECTL:-$root/e2e/.run/bin/kubectl}
ns=tessera-system

e2e_abort() { echo "$1" >&2; echo "0 passed, 1 failed"; exit 1; }

# The local cluster must be up (make cluster-up).
e2e_require_cluster() {
  kubectl get nodes >/dev/null 2>&1 \
    || e2e_abort "the cluster is not reachable (KUBECONFIG=$KUBECONFIG); run make cluster-up"
}

# e2e_require_root "<why the suite needs root>"
e2e_require_root() {
  [[ $(id -u) == 0 ]] || e2e_abort "$1: run as root"
}

# Builds and imports the image (cached by content), applies the CRD (Helm
# does not upgrade CRDs) and installs the chart with two operator replicas,
# then restarts the operator so its pods run this build. Sets $image, $helm.
e2e_install_operator() {
  e2e/image.sh >&2 || e2e_abort "FAIL image"
  image=$(cat e2e/.run/image)
  helm=$(scripts/find-helm.sh) || e2e_abort "FAIL no helm binary (make cluster-up builds one)"
  kubectl apply --server-side --force-conflicts -f crds/databaseclusters.tessera.dev.yaml >&2 \
    || e2e_abort "FAIL applying the CRD"
  "$helm" upgrade --install tessera charts/tessera --namespace "$ns" --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
    --set replicaCount=2 --set logLevel=info --wait --timeout 5m >&2 \
    || e2e_abort "FAIL helm install"
  kubectl rollout restart deployment/tessera -n "$ns" >&2 \
    || e2e_abort "FAIL kubectl rollout restart of the operator"
  kubectl rollout status deployment/tessera -n "$ns" --timeout=180s >&2 \
    || e2e_abort "FAIL the operator's rollout did not finish (kubectl rollout status)"
}
