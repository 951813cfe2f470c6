#!/usr/bin/env bash
# Prints the path of a helm binary: $HELM, the e2e cluster's, the e2e cache's,
# or one on PATH. Exits 1 when there is none.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for h in "${HELM:-}" "$root/e2e/.run/bin/helm" "$HOME"/.cache/tessera/helm-*/bin/helm "$(command -v helm 2>/dev/null || true)"; do
  if [[ -n $h && -x $h ]]; then echo "$h"; exit 0; fi
done
exit 1
