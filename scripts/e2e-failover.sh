#!/usr/bin/env bash
# Failover end-to-end tests on the local cluster (assumed up: make cluster-up).
# Builds and imports the image (cached by content), installs the chart with
# two operator replicas and runs tests/e2e_failover.rs. Ends with
# `N passed, M failed`.
#   TESSERA_E2E_ONLY=kill,delete,hang,operator,blocked,strong,eventual   a subset
#   TESSERA_FAILOVER_BENCH=N   run N failovers of a 3x3 quorum cluster instead (make bench-failover)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"

e2e_require_cluster
e2e_require_root "the failover tests signal the pods' processes from the host"

e2e_install_operator

out=$(mktemp)
TESSERA_E2E=1 timeout "${TESSERA_E2E_TIMEOUT:-1800}" \
  cargo test --quiet --locked --test e2e_failover -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_failover did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=60 --prefix 2>/dev/null | grep -iE "failover|promot|fenc|blocked" | tail -40 >&2 || true
fi
(( failed == 0 ))
