# shellcheck shell=bash
# Worker nodes for the e2e cluster: sourced by cluster.sh, never executed.
#
# Node 1 is the host itself (`tessera-e2e`, zone-a): it runs the control
# plane, so it is the one node a test never takes away. Nodes 2..N
# (`tessera-e2e-2`, zone-b; `tessera-e2e-3`, zone-c; …) are what kind makes
# with containers, made here with namespaces: each has
#   - its own network namespace `tessera-e2e-K`, joined to the host by a veth
#     pair (host end `te2e-K`), with its own bridge `tessera0` for its pods;
#   - its own mount namespace (kept in $RUNTIME/ns/mnt-K), so its containers'
#     and volumes' mounts are its own and vanish with it;
#   - its own containerd, kubelet and kube-proxy, in that namespace pair, and
#     a cgroup of its own (`/tessera-e2e-K` in every hierarchy: the daemons in
#     `daemons/`, the kubelet's pods in `kubepods/`), so the whole node can be
#     frozen like a hung machine.
#
# Addresses (all in 198.18.0.0/15, nothing routed elsewhere):
#   node K's pods   198.18.(K-1).0/24, its node IP 198.18.(K-1).1 (the bridge)
#   host <-> node K 198.18.255.(2K)/31 (host end) and .(2K+1) (node end)
# The host routes each node's pod range over its veth; a node's default
# route is the host. Nothing is masqueraded.
#
# Faults (cluster.sh node ACTION K), the ways a real node stops answering:
#   freeze / thaw   every process of the node stopped (freezer cgroup) — a
#                   hung machine; its pods stay Running in the API
#   cut / heal      its link to everything else down — a partition
#   kill / start    its kubelet, containerd, kube-proxy and pods killed — a
#                   powered-off machine; `start` boots it again

ZONES=(zone-a zone-b zone-c zone-d zone-e)
node_name() { if (($1 == 1)); then echo "$NODE_NAME"; else echo "$NODE_NAME-$1"; fi; }
node_zone() { echo "${ZONES[$(($1 - 1))]:-zone-$1}"; }
node_ip() { echo "198.18.$(($1 - 1)).1"; }
node_netns() { echo "tessera-e2e-$1"; }
node_veth() { echo "te2e-$1"; }
node_dir() { echo "$STATE/nodes/$1"; }
node_rt() { echo "$RUNTIME/nodes/$1"; }
node_sock() { echo "$(node_rt "$1")/containerd.sock"; }
node_mntns() { echo "$RUNTIME/ns/mnt-$1"; }
node_cgroup() { echo "tessera-e2e-$1"; }

# The workers that exist now (their network namespaces), in order.
workers() {
  local n
  for n in /run/netns/tessera-e2e-*; do
    [[ -e $n ]] && echo "${n##*-}"
  done | sort -n
}

# Every containerd socket of the cluster (host node first): images go to all.
all_sockets() {
  echo "$CONTAINERD_SOCK"
  local k
  for k in $(workers); do echo "$(node_sock "$k")"; done
}

# in_node K COMMAND...: run COMMAND inside node K's network and mount namespaces.
in_node() {
  local k=$1; shift
  nsenter --net="/run/netns/$(node_netns "$k")" --mount="$(node_mntns "$k")" -- "$@"
}

# ------------------------------------------------------------------ setup
node_network() {
  local k=$1 ns veth ip host_end node_end
  ns=$(node_netns "$k") veth=$(node_veth "$k") ip=$(node_ip "$k")
  host_end="198.18.255.$((2 * k))" node_end="198.18.255.$((2 * k + 1))"
  [[ -e /run/netns/$ns ]] || ip netns add "$ns"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
  fi
  ip addr replace "$host_end/31" dev "$veth"
  ip link set "$veth" up
  ip route replace "198.18.$((k - 1)).0/24" via "$node_end" dev "$veth"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr replace "$node_end/31" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$host_end" dev eth0
  ip -n "$ns" link show "$BRIDGE" >/dev/null 2>&1 || ip -n "$ns" link add "$BRIDGE" type bridge
  ip -n "$ns" addr replace "$ip/24" dev "$BRIDGE"
  ip -n "$ns" link set "$BRIDGE" up
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.bridge.bridge-nf-call-ip6tables=1
}

# A mount namespace that outlives any one process: containerd and the kubelet
# must see each other's mounts, and the host must not see either's.
node_mount_ns() {
  local k=$1 f
  f=$(node_mntns "$k")
  mkdir -p "$RUNTIME/ns"
  if ! mountpoint -q "$RUNTIME/ns"; then
    mount --bind "$RUNTIME/ns" "$RUNTIME/ns"
    mount --make-private "$RUNTIME/ns"
  fi
  # A bind-mounted namespace file is a mount point; a plain file is not.
  mountpoint -q "$f" && return 0
  touch "$f"
  unshare --mount="$f" --propagation slave true
}

node_cgroups() {
  local k=$1 h cg
  cg=$(node_cgroup "$k")
  for h in /sys/fs/cgroup/*/; do
    [[ -e $h/cgroup.procs ]] || continue
    mkdir -p "$h$cg/daemons"
  done
}

node_pki() {
  local k=$1 name ip
  name=$(node_name "$k") ip=$(node_ip "$k")
  cert "kubelet-$k" "/O=system:nodes/CN=system:node:$name"
  cert "kubelet-serving-$k" "/CN=$name" "IP:$ip,DNS:$name"
  kubeconfig "$RUN/kubelet-$k.kubeconfig" "kubelet-$k"
}

node_configs() {
  local k=$1 dir rt name ip
  dir=$(node_dir "$k") rt=$(node_rt "$k") name=$(node_name "$k") ip=$(node_ip "$k")
  mkdir -p "$dir/cni/net.d" "$rt" "$RUN/conf"
  # Same settings as the host node's (write_configs), with this node's paths.
  sed -e "s|root = \"$STATE/containerd\"|root = \"$dir/containerd\"|" \
      -e "s|state = \"$RUNTIME/containerd\"|state = \"$rt/containerd\"|" \
      -e "s|$CONTAINERD_SOCK|$(node_sock "$k")|g" \
      -e "s|$STATE/containerd-opt|$dir/containerd-opt|" \
      -e "s|conf_dir = \"$STATE/cni/net.d\"|conf_dir = \"$dir/cni/net.d\"|" \
      "$RUN/conf/containerd.toml" >"$RUN/conf/containerd-$k.toml"
  sed -e "s|\"$POD_CIDR\"|\"198.18.$((k - 1)).0/24\"|" -e "s|\"$NODE_IP\"|\"$ip\"|" \
      -e "s|$STATE/cni/ipam|$dir/cni/ipam|" \
      "$STATE/cni/net.d/10-tessera.conflist" >"$dir/cni/net.d/10-tessera.conflist"
  sed -e "s|$CONTAINERD_SOCK|$(node_sock "$k")|" -e "s|^address: .*|address: $ip|" \
      -e "s|$PKI/kubelet-serving\.|$PKI/kubelet-serving-$k.|" \
      -e "s|^podLogsDir: .*|podLogsDir: $dir/pod-logs|" \
      "$RUN/conf/kubelet.yaml" >"$RUN/conf/kubelet-$k.yaml"
  echo "cgroupRoot: /$(node_cgroup "$k")" >>"$RUN/conf/kubelet-$k.yaml"
  sed -e "s|^hostnameOverride: .*|hostnameOverride: $name|" \
      -e "s|$NODE_IP/32|$ip/32|" \
      "$RUN/conf/kube-proxy.yaml" >"$RUN/conf/kube-proxy-$k.yaml"
}

# ------------------------------------------------------------------ start / stop
# start_in_node K NAME COMMAND...: like `start`, inside node K, and the
# process placed in the node's daemons cgroup (so `freeze` stops it too).
start_in_node() {
  local k=$1 name=$2; shift 2
  start "$name" nsenter --net="/run/netns/$(node_netns "$k")" --mount="$(node_mntns "$k")" -- "$@"
  local p h
  p=$(pid_of "$name")
  for h in /sys/fs/cgroup/*/; do
    [[ -e $h$(node_cgroup "$k")/daemons/cgroup.procs ]] || continue
    echo "$p" >"$h$(node_cgroup "$k")/daemons/cgroup.procs" 2>/dev/null || true
  done
}

node_daemons() { echo "containerd-$1 kubelet-$1 kube-proxy-$1"; }

start_worker() {
  local k=$1 name
  name=$(node_name "$k")
  node_network "$k"
  node_mount_ns "$k"
  node_cgroups "$k"
  node_pki "$k"
  node_configs "$k"
  start_in_node "$k" "containerd-$k" containerd --config "$RUN/conf/containerd-$k.toml"
  wait_for 30 "containerd of $name" ctr --address "$(node_sock "$k")" version || fail "containerd-$k"
  import_images_to "$(node_sock "$k")"
  start_in_node "$k" "kubelet-$k" kubelet --config="$RUN/conf/kubelet-$k.yaml" \
    --kubeconfig="$RUN/kubelet-$k.kubeconfig" --root-dir="$(node_dir "$k")/kubelet" \
    --hostname-override="$name" --node-ip="$(node_ip "$k")" \
    --node-labels="topology.kubernetes.io/zone=$(node_zone "$k")" --v=1
  start_in_node "$k" "kube-proxy-$k" kube-proxy --config="$RUN/conf/kube-proxy-$k.yaml" --v=1
}

wait_worker() {
  local name
  name=$(node_name "$1")
  wait_for 120 "node $name Ready" kctl wait --for=condition=Ready "node/$name" --timeout=2s \
    || fail "kubelet-$1"
}

# Every process of node K: its daemons, their shims, its pods' processes.
node_pids() {
  local k=$1 h
  for h in /sys/fs/cgroup/freezer /sys/fs/cgroup/pids /sys/fs/cgroup/memory; do
    [[ -d $h/$(node_cgroup "$k") ]] || continue
    find "$h/$(node_cgroup "$k")" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# Power off node K: every process killed, its mounts and pod sandboxes gone
# with its mount namespace; the network namespace (the "machine") stays so
# `start` can boot it again.
kill_worker() {
  local k=$1 c p
  for c in $(node_daemons "$k"); do
    p=$(pid_of "$c") && kill -KILL "$p" 2>/dev/null || true
    rm -f "$PIDS/$c.pid"
  done
  freezer_state "$k" THAWED
  for _ in 1 2 3 4 5; do
    p=$(node_pids "$k")
    [[ -z $p ]] && break
    # shellcheck disable=SC2086
    kill -KILL $p 2>/dev/null || true
    sleep 0.3
  done
  # The pod network namespaces were bind-mounted inside the node's mount
  # namespace; unmounting that namespace releases them.
  umount "$(node_mntns "$k")" 2>/dev/null || umount -l "$(node_mntns "$k")" 2>/dev/null || true
  rm -f "$(node_mntns "$k")"
  local h
  for h in /sys/fs/cgroup/*/"$(node_cgroup "$k")"/kubepods; do rmdir_tree "$h"; done
  # The pods' veths: their namespaces are gone, the bridge ends with them.
}

freezer_state() { # freezer_state K FROZEN|THAWED
  local f=/sys/fs/cgroup/freezer/$(node_cgroup "$1")/freezer.state
  [[ -e $f ]] && echo "$2" >"$f"
}

remove_worker() {
  local k=$1 h
  kill_worker "$k"
  ip route del "198.18.$((k - 1)).0/24" 2>/dev/null || true
  ip link del "$(node_veth "$k")" 2>/dev/null || true
  ip netns del "$(node_netns "$k")" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/"$(node_cgroup "$k")"; do rmdir_tree "$h"; done
  rm -rf "$(node_dir "$k")" "$(node_rt "$k")"
  kctl delete node "$(node_name "$k")" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}

# ------------------------------------------------------------------ commands
# cluster.sh nodes N: make the cluster have N nodes (1 = the host alone).
cmd_nodes() {
  local want=${1:?usage: cluster.sh nodes N} k t0=$SECONDS
  ((want >= 1)) || die "nodes: N must be at least 1"
  healthy || die "the cluster is not up (cluster.sh up)"
  # Below its eviction threshold a kubelet garbage-collects images, and ours
  # cannot be pulled back.
  check_disk
  for k in $(workers); do ((k > want)) && { log "removing node $(node_name "$k")"; remove_worker "$k"; }; done
  for ((k = 2; k <= want; k++)); do
    if alive "kubelet-$k"; then continue; fi
    log "starting node $(node_name "$k") ($(node_zone "$k"), pods 198.18.$((k - 1)).0/24)"
    start_worker "$k"
  done
  for ((k = 2; k <= want; k++)); do wait_worker "$k"; done
  label_host_zone
  log "$want node(s) Ready in $((SECONDS - t0))s"
}

label_host_zone() {
  kctl label node "$NODE_NAME" "topology.kubernetes.io/zone=$(node_zone 1)" --overwrite >/dev/null
}

# cluster.sh node ACTION K: the faults above, on worker K (2..N).
cmd_node() {
  local action=${1:-} k=${2:-}
  [[ $k =~ ^[0-9]+$ ]] && ((k >= 2)) || die "usage: cluster.sh node freeze|thaw|cut|heal|kill|start K (K >= 2: node 1 runs the control plane)"
  [[ -e /run/netns/$(node_netns "$k") ]] || die "node $(node_name "$k") does not exist (cluster.sh nodes N)"
  case $action in
    freeze) freezer_state "$k" FROZEN || die "no freezer cgroup for node $k" ;;
    thaw) freezer_state "$k" THAWED || die "no freezer cgroup for node $k" ;;
    cut) ip link set "$(node_veth "$k")" down ;;
    heal) ip link set "$(node_veth "$k")" up
      ip route replace "198.18.$((k - 1)).0/24" via "198.18.255.$((2 * k + 1))" dev "$(node_veth "$k")" ;;
    kill) kill_worker "$k" ;;
    start) start_worker "$k"; wait_worker "$k" ;;
    *) die "unknown node action '$action' (freeze|thaw|cut|heal|kill|start)" ;;
  esac
  log "node $(node_name "$k"): $action"
}

# `down`: every worker, before the host node's own teardown.
remove_workers() {
  local k
  for k in $(workers); do remove_worker "$k"; done
  if mountpoint -q "$RUNTIME/ns" 2>/dev/null; then umount "$RUNTIME/ns" 2>/dev/null || true; fi
}
