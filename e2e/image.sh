#!/usr/bin/env bash
# Build the Tessera image from the repository's Dockerfile with buildah, with
# no registry and no network: the base images are the locally debootstrapped
# Debian images, and the build stage compiles offline with the host's Rust
# toolchain and the crates the host fetched from Cargo.lock.
# The result is saved as an OCI archive, imported into the e2e cluster's
# containerd (if it is running), and its reference written to e2e/.run/image;
# the binary inside it is linked as e2e/.run/bin/tessera.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$E2E_DIR/build.sh"   # helpers only (main runs when executed directly)

mkdir -p "$RUN" "$LOGS/build" "$IMAGES_DIR" "$CACHE/cargo-target"
"$E2E_DIR/build.sh"          # base images (cheap when cached)

# Tag by content, so an unchanged tree is not rebuilt and every change gets a
# new tag (never :latest, so the kubelet never tries to pull it).
inputs=()
for p in Cargo.toml Cargo.lock Dockerfile .dockerignore build.rs src; do
  [[ -e $REPO_ROOT/$p ]] && inputs+=("$p")
done
hash=$(cd "$REPO_ROOT" && find "${inputs[@]}" -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
ref="localhost/tessera:dev-$hash"
ar=$(image_archive "$ref")

if [[ ! -s $ar ]]; then
  ensure_in_storage "$BASE_IMAGE"
  ensure_in_storage "$BUILDER_IMAGE"
  # The build is hermetic from the lockfile: the host fetches every locked
  # crate into its cargo home (with the host's trust settings and proxy), and
  # the build stage compiles offline from that mount. Nothing inside the
  # container talks to the network, so its own CA bundle never matters.
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  toolchain=$(rustc --print sysroot 2>/dev/null) || die "no Rust toolchain on the host (rustc not found)"
  [[ -x $toolchain/bin/cargo ]] || die "no cargo in the toolchain at $toolchain"
  log "fetching the locked crates on the host ..."
  start=$SECONDS
  (cd "$REPO_ROOT" && cargo fetch --locked) >"$LOGS/build/cargo-fetch.log" 2>&1 \
    || { tail -20 "$LOGS/build/cargo-fetch.log" >&2; die "cargo fetch failed; see $LOGS/build/cargo-fetch.log"; }
  log "fetched in $((SECONDS - start))s; building $ref with buildah, offline (log: $LOGS/build/tessera-image.log) ..."
  start=$SECONDS
  # chroot isolation: no nested user namespaces or cgroups needed. The
  # toolchain is mounted by itself (not through rustup's proxies), so the
  # cargo home only has to hold the fetched registry.
  "${BUILDAH[@]}" bud --isolation chroot --pull-never --layers=false \
      --build-arg "RUST_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
      --build-arg CARGO_NET_OFFLINE=true \
      -v "$toolchain:/usr/local/rust:ro" -v "$cargo_home:/usr/local/cargo" \
      -v "$CACHE/cargo-target:/build/target" \
      -f "$REPO_ROOT/Dockerfile" -t "$ref" "$REPO_ROOT" >"$LOGS/build/tessera-image.log" 2>&1 \
    || { tail -30 "$LOGS/build/tessera-image.log" >&2; die "image build failed; see $LOGS/build/tessera-image.log"; }
  # Keep one Tessera archive: cluster-up imports every archive in the cache.
  rm -f "$IMAGES_DIR"/tessera-dev-*.tar "$IMAGES_DIR"/tessera-dev-*.bin
  save_image "$ref"
  # ... and one in buildah's storage, so the cache does not grow per commit.
  for old in $("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^localhost/tessera:dev-' || true); do
    [[ $old == "$ref" ]] || "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
  log "built $ref in $((SECONDS - start))s"
fi

# The image's own binary, for host-side commands (`make up` runs
# `tessera status` with it), so Tessera is compiled once, not again on the host.
bin_out="${ar%.tar}.bin"
if [[ ! -x $bin_out ]]; then
  ensure_in_storage "$ref"
  c=$("${BUILDAH[@]}" from --pull-never "$ref")
  mnt=$("${BUILDAH[@]}" mount "$c")
  install -m 0755 "$mnt/usr/local/bin/tessera" "$bin_out.tmp"
  "${BUILDAH[@]}" umount "$c" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
  mv "$bin_out.tmp" "$bin_out"
fi
mkdir -p "$BIN"
ln -sfn "$bin_out" "$BIN/tessera"

echo "$ref" >"$RUN/image"
# Every node's containerd gets it (the host node's and any worker's).
# shellcheck source=nodes.sh
source "$E2E_DIR/nodes.sh"
for sock in $(all_sockets); do
  [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1 || continue
  if ! ctr --address "$sock" --namespace k8s.io images ls -q | grep -qxF "$ref"; then
    ctr --address "$sock" --namespace k8s.io images import "$ar" >>"$LOGS/images.log" 2>&1
  fi
  log "imported $ref into $sock"
done
log "image: $ref (written to $RUN/image)"
