#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need, once, and
# builds helm (cached; the chart tests in tests/operator_crd.rs and
# tests/monitoring.rs render charts/tessera with it and fail without it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need=()
# g++: libFuzzer (the libfuzzer-sys crate) is C++; fuzz/run.sh builds it.
for pkg in redis-tools redis-server g++; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts a redis-server on 6379; our tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
# helm from the Go module proxy, the build `make cluster-up` uses (a no-op
# once cached in ~/.cache/tessera/helm-<version>).
"$root/scripts/find-helm.sh" >/dev/null 2>&1 || "$root/e2e/build.sh" helm
