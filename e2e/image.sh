#!/usr/bin/env bash
# Build the Tessera image from the repository's Dockerfile with buildah, with
# no registry: the base images are the locally debootstrapped Debian images,
# and the build stage uses the host's Rust toolchain and cargo caches.
# The result is saved as an OCI archive, imported into the e2e cluster's
# containerd (if it is running), and its reference written to e2e/.run/image.
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
  rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  [[ -d $rustup_home && -d $cargo_home ]] || die "no Rust toolchain at $rustup_home / $cargo_home"
  log "building $ref with buildah (log: $LOGS/build/tessera-image.log) ..."
  start=$SECONDS
  # chroot isolation: no nested user namespaces or cgroups needed; the build
  # shares the host network (crates.io) like the host's own cargo would.
  "${BUILDAH[@]}" bud --isolation chroot --pull-never --layers=false \
      --build-arg "RUST_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
      -v "$rustup_home:/usr/local/rustup:ro" -v "$cargo_home:/usr/local/cargo" \
      -v "$CACHE/cargo-target:/build/target" \
      -f "$REPO_ROOT/Dockerfile" -t "$ref" "$REPO_ROOT" >"$LOGS/build/tessera-image.log" 2>&1 \
    || { tail -30 "$LOGS/build/tessera-image.log" >&2; die "image build failed; see $LOGS/build/tessera-image.log"; }
  # Keep one Tessera archive: cluster-up imports every archive in the cache.
  rm -f "$IMAGES_DIR"/tessera-dev-*.tar
  save_image "$ref"
  # ... and one in buildah's storage, so the cache does not grow per commit.
  for old in $("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^localhost/tessera:dev-' || true); do
    [[ $old == "$ref" ]] || "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true
  done
  log "built $ref in $((SECONDS - start))s"
fi

echo "$ref" >"$RUN/image"
if [[ -S $CONTAINERD_SOCK ]] && kctr version >/dev/null 2>&1; then
  if ! kctr images ls -q | grep -qxF "$ref"; then
    kctr images import "$ar" >>"$LOGS/images.log" 2>&1
  fi
  log "imported $ref into the cluster's containerd"
fi
log "image: $ref (written to $RUN/image)"
