#!/usr/bin/env bash
# Regenerates what is derived from the code and the chart:
#   crds/databaseclusters.tessera.dev.yaml      (tessera crd)
#   charts/tessera/crds/…                       (the same file)
#   manifests/install.yaml                      (helm template of the chart)
# tests/operator_crd.rs fails when any of them drifts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

crd=crds/databaseclusters.tessera.dev.yaml
cargo run --quiet --locked -- crd >"$crd"
cp "$crd" charts/tessera/crds/
echo "wrote $crd and charts/tessera/crds/"

helm=$(scripts/find-helm.sh) || { echo "helm not found (make cluster-up builds it); manifests/install.yaml not rendered" >&2; exit 1; }
scripts/render-install.sh "$helm" >manifests/install.yaml
echo "wrote manifests/install.yaml"
