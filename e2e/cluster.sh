#!/usr/bin/env bash
# A local Kubernetes for Tessera's e2e tests, from binaries built by
# e2e/build.sh: one node on the host, and more on request (nodes.sh).
# Usage: e2e/cluster.sh up|down|status|nodes N|node ACTION K
# (TESSERA_E2E_NODES=N with `up` starts N nodes at once.)
#
# Layers, bottom to top (see e2e/README.md):
#   host    : bridge tessera0 (198.18.0.1/24), sysctls, cgroup v1 controllers
#   control : etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler
#   node    : containerd (own socket/root) -> kubelet, kube-proxy (iptables),
#             kube-router (NetworkPolicies only: iptables + ipset)
#   addons  : CoreDNS (cluster.local only), local-path-provisioner + default SC
# Every process is started detached with its PID in e2e/.run/pids and its log
# in e2e/.run/logs/<name>.log; `down` undoes every change `up` made.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=nodes.sh
source "$E2E_DIR/nodes.sh"

# Start order matters for `up`; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router)
HOST_STATE="$RUN/host-state"          # what the host looked like before `up`
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# ------------------------------------------------------------------ processes
pid_of() { [[ -s $PIDS/$1.pid ]] && cat "$PIDS/$1.pid"; }
alive()  { local p; p=$(pid_of "$1") && kill -0 "$p" 2>/dev/null; }

# start NAME COMMAND...: run detached (own session, so it outlives make),
# stdout+stderr to the component log.
start() {
  local name=$1; shift
  if alive "$name"; then return 0; fi
  log "starting $name (log: $LOGS/$name.log)"
  # 9>&-: daemons must not inherit the cluster.lock descriptor, or the lock
  # would be held for as long as they run and `down` would wait forever.
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
}

# stop NAME: SIGTERM, up to 10 s grace, then SIGKILL. Only our recorded PID.
stop() {
  local name=$1 p
  p=$(pid_of "$name") || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

# ------------------------------------------------------------------ host
save_host_state() {
  # Recorded once per up/down cycle so a second `up` does not overwrite the
  # original values with ours.
  [[ -s $HOST_STATE/sysctl ]] && return 0
  mkdir -p "$HOST_STATE"
  for s in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
  done >"$HOST_STATE/sysctl.tmp"
  mv "$HOST_STATE/sysctl.tmp" "$HOST_STATE/sysctl"
  for d in /run/netns /var/run/netns /run/containerd /var/log/containers /var/log/pods; do
    [[ -e $d ]] && echo "$d"
  done >"$HOST_STATE/existing-paths"
  : >>"$HOST_STATE/mounted-cgroups"
  # iptables-nft creates nftables tables on first use; remember which existed.
  if command -v nft >/dev/null; then nft list tables >"$HOST_STATE/nft-tables" 2>/dev/null || true; fi
}

setup_host() {
  save_host_state
  # Forwarding between pods, and bridged traffic through iptables so that
  # kube-proxy's DNAT is undone for replies between pods on the same bridge.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  # cgroup v1: the kubelet and runc expect every controller to be mounted;
  # this host leaves some (hugetlb, net_cls, ...) unmounted.
  local c
  for c in hugetlb net_cls net_prio perf_event; do
    grep -qw "^$c" /proc/cgroups || continue
    mountpoint -q "/sys/fs/cgroup/$c" && continue
    grep -q " /sys/fs/cgroup/[^ ]*$c" /proc/self/mounts && continue
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    echo "/sys/fs/cgroup/$c" >>"$HOST_STATE/mounted-cgroups"
  done
  # The bridge exists before the apiserver and kubelet start, so 198.18.0.1
  # (advertise address, node IP) is a local address from the beginning. The
  # CNI bridge plugin then reuses it.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Service traffic from the host goes towards the bridge, never eth0, even
  # before kube-proxy's DNAT rules exist.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
}

restore_host() {
  if [[ -s $HOST_STATE/sysctl ]]; then
    while IFS='=' read -r k v; do sysctl -qw "$k=$v" 2>/dev/null || true; done <"$HOST_STATE/sysctl"
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
  # Leftover veths (only ours: they are the host ends of pods on our bridge,
  # named veth* by the CNI bridge plugin and already deleted with the netns).
  if [[ -s $HOST_STATE/mounted-cgroups ]]; then
    while read -r m; do
      [[ -n $m ]] || continue
      rmdir_tree "$m/kubepods"
      umount "$m" 2>/dev/null && rmdir "$m" 2>/dev/null || true
    done <"$HOST_STATE/mounted-cgroups"
  fi
  # nftables tables that iptables-nft created for us, if now empty.
  if command -v nft >/dev/null && [[ -e $HOST_STATE/nft-tables ]]; then
    local fam name
    nft list tables 2>/dev/null | while read -r _ fam name; do
      grep -qx "table $fam $name" "$HOST_STATE/nft-tables" && continue
      if ! nft list table "$fam" "$name" 2>/dev/null | grep -vqE '^[[:space:]]*(table|chain|type|policy|\}|$)'; then
        nft delete table "$fam" "$name" 2>/dev/null || true
      fi
    done
  fi
  local d
  for d in /run/netns /var/run/netns /run/containerd /var/log/containers /var/log/pods; do
    [[ -e $d ]] || continue
    grep -qx "$d" "$HOST_STATE/existing-paths" 2>/dev/null || rm -rf "$d"
  done
  rm -rf "$HOST_STATE"
}

# rmdir_tree DIR: remove an (empty) cgroup tree depth-first.
rmdir_tree() {
  [[ -d $1 ]] || return 0
  find "$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
}

# Kill every process in the pod cgroups (containers the kubelet did not get
# to stop) and remove those cgroups.
kill_pod_processes() {
  local h pids
  for h in /sys/fs/cgroup/*/kubepods; do
    [[ -d $h ]] || continue
    # cgroups vanish while we read them; a failed read is not an error.
    pids=$(find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
  done
  sleep 0.5
  for h in /sys/fs/cgroup/*/kubepods; do rmdir_tree "$h"; done
}

# containerd shims outlive containerd; find ours by the socket in their argv.
kill_shims() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.*-address $CONTAINERD_SOCK" \
      && kill -KILL "${p#/proc/}" 2>/dev/null || true
  done
}

# Unmount everything below our state dirs and CNI network namespaces,
# deepest first.
unmount_ours() {
  local m
  awk '{print $5}' /proc/self/mountinfo \
    | grep -E "^($STATE|$RUNTIME|/run/netns/cni-|/var/run/netns/cni-)" \
    | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      done || true   # grep finding nothing is fine
}

# Remove the iptables chains kube-proxy, the kubelet and CNI plugins create
# (KUBE-*, CNI-*) and every rule that jumps to them, in all tables.
cleanup_iptables() {
  local ipt t line chain
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      local dump; dump=$("$ipt-save" -t "$t" 2>/dev/null) || continue
      # rules in built-in chains that jump to our chains
      while read -r line; do
        eval "$ipt -t $t -D ${line#-A }" 2>/dev/null || true
      done < <(grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*-j (KUBE|CNI)-' <<<"$dump" || true)
      local chains; chains=$(grep -oE '^:(KUBE|CNI)-[^ ]+' <<<"$dump" | cut -c2- || true)
      for chain in $chains; do "$ipt" -t "$t" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$ipt" -t "$t" -X "$chain" 2>/dev/null || true; done
    done
  done
}

# ------------------------------------------------------------------ pki
# A throwaway CA and one certificate per component; kept across up/down in
# e2e/.run/pki (delete it to regenerate).
cert() { # cert NAME SUBJECT [SAN]
  local name=$1 subj=$2 san=${3:-}
  [[ -s $PKI/$name.crt ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() { # kubeconfig FILE CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tessera-e2e
  cluster:
    server: $APISERVER
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: tessera-e2e
  context: {cluster: tessera-e2e, user: $2}
current-context: tessera-e2e
EOF
  chmod 600 "$1"
}

setup_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -s $PKI/ca.crt ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=tessera-e2e-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  [[ -s $PKI/sa.key ]] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  cert apiserver "/CN=kube-apiserver" \
    "IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=tessera-e2e-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  cert kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
  cert kube-proxy "/CN=system:kube-proxy"
  kubeconfig "$KUBECONFIG_FILE" admin
  # Reads pods, namespaces, policies and nodes (a local test cluster: no narrower role).
  cert kube-router "/O=system:masters/CN=tessera-e2e-kube-router"
  for c in controller-manager scheduler kubelet kube-proxy kube-router; do kubeconfig "$RUN/$c.kubeconfig" "$c"; done
}

# ------------------------------------------------------------------ configs
write_configs() {
  mkdir -p "$RUN/conf" "$STATE/cni/net.d" "$STATE/local-path" "$RUNTIME/containerd"
  # containerd 1.6 (Debian bookworm), config format version 2, fully separate
  # from any system containerd: own root, state, socket and CNI config dir.
  cat >"$RUN/conf/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUNTIME/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj
  # (the sandbox asks for -998: "failed to update /proc/self/oom_score_adj:
  # Permission denied"). Clamp scores to containerd's own instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  # Bridge CNI with host-local IPAM. ipMasq false: pod traffic is never
  # NATed to the outside interface (there is no route out for it anyway).
  cat >"$STATE/cni/net.d/10-tessera.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tessera",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$STATE/cni/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
EOF
  # Pods with dnsPolicy Default (CoreDNS itself) get this file: no upstream
  # nameserver at all, so nothing can leak to the host's resolver.
  echo "# tessera-e2e: no upstream DNS" >"$RUN/conf/resolv.conf"
  cat >"$RUN/conf/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host runs cgroup v1, which kubelet 1.34 refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_SVC_IP]
resolvConf: $RUN/conf/resolv.conf
podLogsDir: $STATE/pod-logs
failSwapOn: false
# A busy CI disk must not evict test pods, and image GC must never delete
# our locally built images (they cannot be pulled back).
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
EOF
  cat >"$RUN/conf/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $CLUSTER_CIDR
detectLocalMode: ClusterCIDR
# NodePorts only on the node IP (198.18.0.1): no route_localnet, nothing on eth0.
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ------------------------------------------------------------------ start
kctl() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

start_control_plane() {
  start etcd etcd --name tessera-e2e --data-dir "$STATE/etcd" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "tessera-e2e=http://$ETCD_PEER" --unsafe-no-fsync
  wait_for 30 etcd curl -fsS "http://$ETCD_CLIENT/health" || fail etcd

  start kube-apiserver kube-apiserver \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port=6443 \
    --etcd-servers="http://$ETCD_CLIENT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --profiling=false --v=1
  wait_for 60 kube-apiserver kctl get --raw /readyz || fail kube-apiserver

  start kube-controller-manager kube-controller-manager \
    --kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false \
    --profiling=false --v=1
  start kube-scheduler kube-scheduler \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_node() {
  start containerd containerd --config "$RUN/conf/containerd.toml"
  wait_for 30 containerd kctr version || fail containerd
  import_images_to "$CONTAINERD_SOCK"
  start kubelet kubelet --config="$RUN/conf/kubelet.yaml" --kubeconfig="$RUN/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  start kube-proxy kube-proxy --config="$RUN/conf/kube-proxy.yaml" --v=1
  wait_for 90 "node $NODE_NAME Ready" kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s \
    || fail kubelet
  # NetworkPolicies are enforced on this node's pods (iptables + ipset); it
  # needs the Node object, so it starts once the node is registered.
  # Traffic from the node itself (probes, the tests on the host) is let
  # through, as kube-router does on every node.
  start kube-router kube-router --run-firewall=true --run-router=false --run-service-proxy=false \
    --enable-cni=false --enable-pod-egress=false --kubeconfig="$RUN/kube-router.kubeconfig" \
    --hostname-override="$NODE_NAME" --service-cluster-ip-range="$SERVICE_CIDR" --health-port=0 --v=1
  wait_for 30 "kube-router's first policy sync" grep -q "sync iptables took" "$LOGS/kube-router.log" \
    && alive kube-router || fail kube-router
}

# Import every image archive we built (and the Tessera image, if built) into
# the k8s.io namespace of the containerd at SOCKET. Images already present are
# skipped.
import_images_to() { # import_images_to SOCKET
  local sock=$1 have ar ref
  have=$(ctr --address "$sock" --namespace k8s.io images ls -q 2>/dev/null || true)
  for ar in "$IMAGES_DIR"/*.tar; do
    [[ -e $ar ]] || continue
    ref=$(tar -xOf "$ar" index.json 2>/dev/null | jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"] // empty')
    [[ -n $ref ]] || continue
    [[ $ref == "$BUILDER_IMAGE" ]] && continue   # build-time only
    grep -qxF "$ref" <<<"$have" && continue
    log "importing $ref"
    ctr --address "$sock" --namespace k8s.io images import "$ar" >>"$LOGS/images.log" 2>&1 \
      || fail "image import of $ar"
  done
}

apply_addons() {
  local f
  for f in coredns local-path; do
    sed -e "s|@@COREDNS_IMAGE@@|$COREDNS_IMAGE|g" -e "s|@@DNS_SVC_IP@@|$DNS_SVC_IP|g" \
        -e "s|@@LOCAL_PATH_IMAGE@@|$LOCAL_PATH_IMAGE|g" -e "s|@@BASE_IMAGE@@|$BASE_IMAGE|g" \
        -e "s|@@LOCAL_PATH_DIR@@|$STATE/local-path|g" "$E2E_DIR/manifests/$f.yaml" \
      | kctl apply -f - >>"$LOGS/addons.log" 2>&1 || fail "applying $f addon (see $LOGS/addons.log)"
  done
  kctl -n kube-system rollout status deploy/coredns --timeout=60s >>"$LOGS/addons.log" 2>&1 || fail coredns
  kctl -n local-path-storage rollout status deploy/local-path-provisioner --timeout=60s >>"$LOGS/addons.log" 2>&1 \
    || fail local-path-provisioner
}

fail() {
  log "FAILED: $1 did not come up. Last lines of the relevant logs:"
  local f
  for f in "$LOGS"/*.log; do
    [[ -s $f ]] || continue
    echo "----- $f" >&2; tail -5 "$f" >&2
  done
  log "logs: $LOGS/  (kubectl: KUBECONFIG=$KUBECONFIG_FILE $BIN/kubectl)"
  exit 1
}

healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  kctl get --raw /readyz >/dev/null 2>&1 || return 1
  kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s >/dev/null 2>&1
}

# The kubelet taints the node (disk-pressure) when its filesystem runs low,
# and then every new pod stays Pending with a scheduling message that does
# not say why. Refuse to start instead, naming the fix.
MIN_FREE_GIB=${TESSERA_E2E_MIN_FREE_GIB:-5}
check_disk() {
  local dir=/var/lib free
  free=$(df --output=avail -BG "$dir" | tail -1 | tr -dc 0-9)
  ((free >= MIN_FREE_GIB)) && return 0
  die "only ${free} GiB free on the filesystem of $dir (at least ${MIN_FREE_GIB} GiB needed, or the kubelet taints the node with disk-pressure); free some space (cargo target directories are the usual culprits) and retry"
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$RUN" "$LOGS" "$PIDS"
  "$E2E_DIR/build.sh"
  check_disk
  if healthy; then
    log "cluster already up"
    if ((${TESSERA_E2E_NODES:-1} > 1)); then cmd_nodes "$TESSERA_E2E_NODES"; fi
    cmd_status; return 0
  fi
  # Half-up (a crash, or an interrupted run): start from a clean slate.
  if ls "$PIDS"/*.pid >/dev/null 2>&1 || ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "found a partial cluster; cleaning it up first"
    cmd_down
    mkdir -p "$RUN" "$LOGS" "$PIDS"
  fi
  local t1=$SECONDS
  setup_host
  setup_pki
  write_configs
  start_control_plane
  start_node
  apply_addons
  if ((${TESSERA_E2E_NODES:-1} > 1)); then cmd_nodes "$TESSERA_E2E_NODES"; fi
  log "cluster up in $((SECONDS - t1))s (build check $((t1 - t0))s); KUBECONFIG=$KUBECONFIG_FILE"
  log "binaries (kubectl, helm, ...): $BIN"
}

cmd_down() {
  # Each step runs even if an earlier one failed (a `||` list also switches
  # off errexit inside the step), so a half-broken cluster is still cleaned.
  local c step
  # kubelet first so it does not restart containers while we tear down.
  for step in remove_workers "stop kubelet" "stop kube-proxy" "stop kube-router" kill_pod_processes kill_shims \
      "stop containerd" "stop kube-scheduler" "stop kube-controller-manager" \
      "stop kube-apiserver" "stop etcd" kube_proxy_cleanup cleanup_iptables kube_router_cleanup \
      unmount_ours remove_state restore_host; do
    $step || log "warning: '$step' failed; continuing"
  done
  rm -rf "$PIDS" "$RUN/conf"
  log "cluster down"
}

# kube-router's ipsets (its iptables chains are KUBE-*, swept above).
kube_router_cleanup() {
  [[ -x $BIN/kube-router ]] || return 0
  "$BIN/kube-router" --cleanup-config >"$LOGS/kube-router-cleanup.log" 2>&1 || true
}

# kube-proxy knows how to remove its own rules; cleanup_iptables sweeps the rest.
kube_proxy_cleanup() {
  [[ -x $BIN/kube-proxy ]] || return 0
  "$BIN/kube-proxy" --cleanup >"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
}

remove_state() {
  rm -rf "$STATE" "$RUNTIME"
}

cmd_status() {
  local c
  for c in "${COMPONENTS[@]}" $(for k in $(workers); do node_daemons "$k"; done); do
    if alive "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
    else printf '%-24s stopped\n' "$c"; fi
  done
  if kctl get --raw /readyz >/dev/null 2>&1; then
    kctl get nodes -o wide
    kctl get pods -A -o wide
  else
    echo "kube-apiserver not reachable at $APISERVER"
    return 1
  fi
}

# One up/down at a time: several make targets (make up, make e2e, tests) may
# call these concurrently on one machine.
lock() {
  mkdir -p "$RUN"
  exec 9>"$RUN/cluster.lock"
  flock -w 900 9 || die "another cluster.sh up/down is still running after 900s"
}

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  nodes) lock; cmd_nodes "${2:-}" ;;
  node) cmd_node "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 up|down|status|nodes N|node freeze|thaw|cut|heal|kill|start K" >&2; exit 2 ;;
esac
