#!/usr/bin/env bash
# Resharding end-to-end tests on the local cluster (assumed up: make
# cluster-up). Builds and imports the image (cached by content), installs the
# chart with two operator replicas and runs tests/e2e_resharding.rs. Ends
# with `N passed, M failed`.
#   TESSERA_E2E_ONLY=scale,source,operator,autoscale,refused   a subset
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"

e2e_require_cluster
e2e_require_root "the fault tests signal the pods' processes from the host"

e2e_install_operator

out=$(mktemp)
TESSERA_E2E=1 timeout "${TESSERA_E2E_TIMEOUT:-2400}" \
  cargo test --quiet --locked --test e2e_resharding -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_resharding did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=200 --prefix 2>/dev/null | grep -iE "reshard|migration|slot|move" | tail -60 >&2 || true
fi
(( failed == 0 ))
