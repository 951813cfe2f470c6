#!/usr/bin/env bash
# Renders manifests/install.yaml from the chart (to stdout): a Namespace, the
# CRD and the operator with the chart's default values.
# Usage: scripts/render-install.sh HELM
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
helm=$1
cat <<'HDR'
# Tessera operator: kubectl apply --server-side -f manifests/install.yaml
# Rendered from charts/tessera by scripts/generate.sh; do not edit.
# The image is localhost/tessera:<appVersion>; build it with `make image` or
# point the Deployment at your registry (or use the Helm chart's values).
---
apiVersion: v1
kind: Namespace
metadata:
  name: tessera-system
HDR
"$helm" template tessera charts/tessera --namespace tessera-system --include-crds
