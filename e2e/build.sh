#!/usr/bin/env bash
# Idempotent installer for everything the e2e cluster needs:
#   1. Debian packages (containerd, runc, CNI plugins, buildah, debootstrap, ...)
#   2. Go binaries from the Go module proxy (Kubernetes, etcd, CoreDNS, Helm,
#      local-path-provisioner), cached per version under ~/.cache/tessera
#   3. Container images built locally (no registry): pause, a debootstrap
#      Debian base, a builder with build-essential, CoreDNS and the provisioner,
#      saved as OCI archives under ~/.cache/tessera/images
#   4. Links to every binary in e2e/.run/bin
# Only what is missing is built, so a warm run takes a second or two.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$CACHE" "$IMAGES_DIR" "$LOGS" "$BIN"
BUILD_LOG="$LOGS/build"
mkdir -p "$BUILD_LOG"

# ---------------------------------------------------------------- packages
APT_PACKAGES=(containerd runc containernetworking-plugins buildah debootstrap
  iptables nftables ipset conntrack iproute2 openssl jq curl redis-tools util-linux procps)
install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$BUILD_LOG/apt.log" 2>&1
  apt-get install -y -q "${missing[@]}" >>"$BUILD_LOG/apt.log" 2>&1 \
    || die "apt-get install failed; see $BUILD_LOG/apt.log"
  # The Debian containerd package starts a system containerd on /run/containerd;
  # ours runs separately, so leave it alone (it does not conflict).
}

# ---------------------------------------------------------------- go builds
# Go settings shared by every build: static binaries, two parallel compile
# jobs (2-core machines; also keeps the linker's memory in check), stripped.
export CGO_ENABLED=0 GOFLAGS=-mod=mod
GO_BUILD=(go build -p 2 -trimpath)

# go_component NAME DIR BINARIES... -- COMMAND: run COMMAND (which must write
# the binaries into $OUT) unless DIR/bin already holds every binary.
go_component() {
  local name=$1 dir=$2; shift 2
  local bins=()
  while [[ $1 != -- ]]; do bins+=("$1"); shift; done; shift
  local ok=1
  for b in "${bins[@]}"; do [[ -x $dir/bin/$b ]] || ok=0; done
  ((ok)) && return 0
  log "building $name (log: $BUILD_LOG/$name.log) ..."
  local start=$SECONDS
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/bin"
  OUT="$dir.tmp/bin" "$@" >"$BUILD_LOG/$name.log" 2>&1 \
    || { tail -20 "$BUILD_LOG/$name.log" >&2; die "building $name failed; see $BUILD_LOG/$name.log"; }
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  log "built $name in $((SECONDS - start))s"
}

build_k8s() {
  # One `go build` for all six commands, so shared packages compile once.
  local x=k8s.io/component-base/version
  cd "$E2E_DIR"
  "${GO_BUILD[@]}" -o "$OUT/" -ldflags "-s -w \
      -X $x.gitVersion=$K8S_VERSION -X $x.gitMajor=1 -X $x.gitMinor=34 -X $x.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
}
build_etcd() {
  # Wrapper module in e2e/etcd (etcd's own module has relative replaces).
  cd "$E2E_DIR/etcd"
  "${GO_BUILD[@]}" -ldflags "-s -w" -o "$OUT/etcd" .
}
# CoreDNS, Helm and the provisioner have no replace directives, so
# `go install module@version` builds them straight from the proxy.
build_coredns() {
  GOBIN="$OUT" go install -p 2 -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
}
build_helm() {
  GOBIN="$OUT" go install -p 2 -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
# kube-router's NetworkPolicy controller alone (iptables + ipset; no routing,
# no service proxy, no CNI): the bridge plugin enforces no policies, and the
# upstream nftables agent needs the kernel's nft queue support, which these
# machines lack.
build_kube_router() {
  GOBIN="$OUT" go install -p 2 -trimpath -ldflags "-s -w" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}
build_local_path() {
  GOBIN="$OUT" go install -p 2 -trimpath -ldflags "-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
}

# ---------------------------------------------------------------- images
# buildah keeps its layers next to the cache so rebuilds are cheap and the
# host's default container storage is left untouched.
BUILDAH=(buildah --root "$CACHE/buildah/storage" --runroot "$RUNTIME/buildah")

# image_archive REF: where the OCI archive of REF lives (name-tag.tar).
image_archive() { local r=${1#localhost/}; echo "$IMAGES_DIR/${r//[:\/]/-}.tar"; }

# save_image REF: export REF from buildah storage to its OCI archive.
save_image() {
  local ar; ar=$(image_archive "$1")
  "${BUILDAH[@]}" push -q "$1" "oci-archive:$ar.tmp:$1" >/dev/null
  mv "$ar.tmp" "$ar"
}

# rootfs_image REF TARBALL CMD: image from a root filesystem tarball.
rootfs_image() {
  local ref=$1 tarball=$2 c
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$c" "$tarball" / >/dev/null
  "${BUILDAH[@]}" config --cmd "$3" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$ref" >/dev/null
}

debian_mirror() {
  # Use the mirror apt is already configured with (deb822 or one-line format).
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v '^[[:space:]]*#' \
      | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# debootstrap_image REF EXTRA_PACKAGES: a minimal Debian image.
debootstrap_image() {
  local ref=$1 include=$2 ar; ar=$(image_archive "$ref")
  [[ -s $ar ]] && return 0
  local name=${ref#localhost/}; name=${name%%:*}
  log "debootstrapping $ref (log: $BUILD_LOG/$name.log) ..."
  local start=$SECONDS root="$CACHE/rootfs/$name"
  rm -rf "$root"; mkdir -p "$root"
  debootstrap --variant=minbase ${include:+--include="$include"} "$DEBIAN_SUITE" "$root" "$(debian_mirror)" \
    >"$BUILD_LOG/$name.log" 2>&1 || die "debootstrap failed; see $BUILD_LOG/$name.log"
  # Slim it down: apt lists, caches and docs are not needed at runtime.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -cf "$root.tar" .
  rootfs_image "$ref" "$root.tar" /bin/bash
  save_image "$ref"
  rm -rf "$root" "$root.tar"
  log "built $ref in $((SECONDS - start))s"
}

# binary_image REF BASE BINARY... : BASE (or scratch) plus static binaries in
# /usr/local/bin, entrypoint the first binary.
binary_image() {
  local ref=$1 base=$2; shift 2
  local ar; ar=$(image_archive "$ref")
  [[ -s $ar ]] && return 0
  log "building image $ref"
  local c
  if [[ $base == scratch ]]; then c=$("${BUILDAH[@]}" from scratch)
  else c=$("${BUILDAH[@]}" from --pull-never "$base"); fi
  for b in "$@"; do "${BUILDAH[@]}" copy --chmod 0755 "$c" "$b" /usr/local/bin/ >/dev/null; done
  "${BUILDAH[@]}" config --entrypoint "[\"/usr/local/bin/$(basename "$1")\"]" --cmd '' "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$ref" >/dev/null
  save_image "$ref"
}

# Base images must exist in buildah storage (not just as archives) for
# FROM/from to find them; re-load them from the archive after a storage wipe.
ensure_in_storage() {
  "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1 && return 0
  "${BUILDAH[@]}" pull -q "oci-archive:$(image_archive "$1")" >/dev/null
  "${BUILDAH[@]}" tag "$(${BUILDAH[@]} images -q --filter reference="$1" | head -1 || true)" "$1" 2>/dev/null || true
}

build_images() {
  mkdir -p "$RUNTIME"
  # pause: a tiny static Go program (e2e/images/pause).
  if [[ ! -s $(image_archive "$PAUSE_IMAGE") ]]; then
    (cd "$E2E_DIR" && go build -trimpath -ldflags "-s -w" -o "$CACHE/pause-$PAUSE_VERSION" ./images/pause)
    binary_image "$PAUSE_IMAGE" scratch "$CACHE/pause-$PAUSE_VERSION"
  fi
  # Debian base: runtime image for Tessera, helper pods, smoke-test pods.
  debootstrap_image "$BASE_IMAGE" "ca-certificates,curl,procps,iproute2,netbase,redis-tools"
  # Builder: the Tessera Dockerfile's build stage when no registry is around.
  debootstrap_image "$BUILDER_IMAGE" "build-essential,ca-certificates,git,pkg-config,curl"
  binary_image "$COREDNS_IMAGE" scratch "$COREDNS_BIN/coredns"
  ensure_in_storage "$BASE_IMAGE"
  binary_image "$LOCAL_PATH_IMAGE" "$BASE_IMAGE" "$LOCAL_PATH_BIN/local-path-provisioner"
}

link_bins() {
  local d b
  for d in "$K8S_BIN" "$ETCD_BIN" "$COREDNS_BIN" "$HELM_BIN" "$LOCAL_PATH_BIN" "$KUBE_ROUTER_BIN"; do
    for b in "$d"/*; do ln -sfn "$b" "$BIN/$(basename "$b")"; done
  done
}

main() {
  local start=$SECONDS
  install_packages
  go_component kubernetes "$CACHE/kubernetes-$K8S_VERSION" \
    kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl -- build_k8s
  go_component etcd "$CACHE/etcd-$ETCD_VERSION" etcd -- build_etcd
  go_component coredns "$CACHE/coredns-$COREDNS_VERSION" coredns -- build_coredns
  go_component helm "$CACHE/helm-$HELM_VERSION" helm -- build_helm
  go_component local-path-provisioner "$CACHE/local-path-provisioner-$LOCAL_PATH_VERSION" \
    local-path-provisioner -- build_local_path
  go_component kube-router "$CACHE/kube-router-$KUBE_ROUTER_VERSION" kube-router -- build_kube_router
  build_images
  link_bins
  log "build complete in $((SECONDS - start))s (cache: $CACHE)"
}

# `e2e/build.sh helm` builds helm alone (the same cached build): the chart
# tests of `make test-unit` need it before any cluster exists (make deps).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  if [[ ${1:-} == helm ]]; then
    go_component helm "$CACHE/helm-$HELM_VERSION" helm -- build_helm
  else
    main "$@"
  fi
fi
