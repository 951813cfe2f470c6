#!/usr/bin/env bash
# Backup and restore end-to-end tests on the local cluster (assumed up: make
# cluster-up). Builds and imports the image (cached by content), installs the
# chart, starts a real S3 server (versitygw, scripts/s3-server.sh) on the pod
# network's host address so pods reach it, and runs tests/e2e_backup.rs
# (PVC and S3 targets side by side). Ends with `N passed, M failed`.
#   TESSERA_E2E_ONLY=pvc|s3        one target only
#   TESSERA_E2E_S3_PORT=17480      the S3 server's port on 198.18.0.1
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/e2e-lib.sh"
start=$SECONDS

e2e_require_cluster
e2e_require_root "the backup tests read and corrupt backups on the volumes' host paths"

e2e_install_operator

# S3: versitygw on the bridge address (198.18.0.1, the node IP), which pods
# reach directly; bucket "backups" is a directory of its posix backend.
port=${TESSERA_E2E_S3_PORT:-17480}
s3dir=$(mktemp -d /tmp/tessera-e2e-s3.XXXXXX)
mkdir -p "$s3dir/data/backups"
s3pid=$(scripts/s3-server.sh start "$s3dir/data" "198.18.0.1:$port") \
  || { echo "FAIL s3 server"; echo "0 passed, 1 failed"; exit 1; }
cleanup() { kill "$s3pid" 2>/dev/null; wait "$s3pid" 2>/dev/null; rm -rf "$s3dir"; }
trap cleanup EXIT
s3up=0
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/198.18.0.1/$port") 2>/dev/null && { s3up=1; break; }
  sleep 0.1
done
((s3up)) || { echo "FAIL s3 server not listening on 198.18.0.1:$port after 10 s"; echo "0 passed, 1 failed"; exit 1; }

out=$(mktemp)
TESSERA_E2E=1 TESSERA_E2E_S3_ENDPOINT="http://198.18.0.1:$port" TESSERA_E2E_S3_DATA="$s3dir/data" \
  timeout "${TESSERA_E2E_TIMEOUT:-1200}" \
  cargo test --quiet --locked --test e2e_backup -- --ignored --nocapture 2>&1 | tee "$out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
rm -f "$out"
if [[ -z $line ]]; then
  echo "FAIL e2e_backup did not finish"; line="0 passed, 1 failed"
fi
failed=$(awk '{print $3}' <<<"$line")
if (( failed > 0 )); then
  kubectl logs -n "$ns" -l app.kubernetes.io/name=tessera-operator --tail=200 --prefix 2>/dev/null \
    | grep -iE "restore|backup" | tail -40 >&2 || true
fi
echo "e2e-backup: $((SECONDS - start))s (image, chart and tests)"
(( failed == 0 ))
