# Shared settings and helpers for the e2e scripts. Sourced, never executed.
# Every path here is absolute so the scripts work from any directory.

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$E2E_DIR/versions.env"

# Build cache: one directory per component and version, so a version bump
# rebuilds only that component and a warm machine builds nothing.
CACHE="${TESSERA_CACHE:-$HOME/.cache/tessera}"
K8S_BIN="$CACHE/kubernetes-$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/bin"
COREDNS_BIN="$CACHE/coredns-$COREDNS_VERSION/bin"
HELM_BIN="$CACHE/helm-$HELM_VERSION/bin"
LOCAL_PATH_BIN="$CACHE/local-path-provisioner-$LOCAL_PATH_VERSION/bin"
KUBE_ROUTER_BIN="$CACHE/kube-router-$KUBE_ROUTER_VERSION/bin"
IMAGES_DIR="$CACHE/images"          # OCI archives of every image we build

# Runtime state. RUN is in the repo (git-ignored) for things people look at
# (kubeconfig, logs, pids, bin links); STATE is on real disk for containerd
# snapshots, kubelet volumes, etcd data and PV data; RUNTIME holds sockets.
RUN="$E2E_DIR/.run"
LOGS="$RUN/logs"
PIDS="$RUN/pids"
PKI="$RUN/pki"
BIN="$RUN/bin"                       # every binary the cluster uses, on one PATH
KUBECONFIG_FILE="$RUN/kubeconfig"
STATE=/var/lib/tessera-e2e
RUNTIME=/run/tessera-e2e
CONTAINERD_SOCK="$RUNTIME/containerd/containerd.sock"

# Addresses: everything stays on 198.18.0.0/15 (RFC 2544 benchmark space).
BRIDGE=tessera0
NODE_IP=198.18.0.1
POD_CIDR=198.18.0.0/24                # the host node's pods; node K's: 198.18.(K-1).0/24
CLUSTER_CIDR=198.18.0.0/16            # every node's pods
SERVICE_CIDR=198.19.0.0/24
KUBERNETES_SVC_IP=198.19.0.1
DNS_SVC_IP=198.19.0.10
NODE_NAME=tessera-e2e
ETCD_CLIENT=127.0.0.1:23790           # off the default port, so a host etcd cannot clash
ETCD_PEER=127.0.0.1:23800
APISERVER="https://$NODE_IP:6443"

# Image references (never :latest, so the kubelet never tries to pull).
PAUSE_IMAGE="localhost/tessera-pause:$PAUSE_VERSION"
BASE_IMAGE="localhost/tessera-base:$BASE_IMAGE_TAG"
BUILDER_IMAGE="localhost/tessera-builder:$BASE_IMAGE_TAG"
COREDNS_IMAGE="localhost/coredns:$COREDNS_VERSION"
LOCAL_PATH_IMAGE="localhost/local-path-provisioner:$LOCAL_PATH_VERSION"

export PATH="$BIN:$PATH"
export KUBECONFIG="$KUBECONFIG_FILE"

log()  { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

# ctr against our own containerd, in the namespace the CRI plugin uses.
kctr() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND once a second.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log "timed out after ${timeout}s waiting for $what"; return 1; fi
    sleep 1
  done
}
