#!/usr/bin/env bash
# The cold path, without a new machine: `make up` (and, with COLD_TEST=1, CI's
# `make test`) from a fresh clone of HEAD with every cache empty — a throwaway
# HOME, so an empty CARGO_HOME, Go module and build caches and
# ~/.cache/tessera — and the time of each step.
#
#   scripts/cold-check.sh                 # make up, cold; then make down
#   COLD_TEST=1 scripts/cold-check.sh     # ... then CI=true .ci/run in the same clone
#   COLD_ROOT=/var/tmp/x scripts/cold-check.sh   # where the clone and HOME go
#
# What a fresh machine already has is kept: the Rust toolchain (RUSTUP_HOME),
# Go, and installed Debian packages (apt installs are system-wide). The
# throwaway directory is left in place (its path is printed) so the caches can
# be inspected or reused; remove it when done.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ip link show tessera0 >/dev/null 2>&1; then
  echo "cold-check: a local Kubernetes is running (bridge tessera0); run make down first" >&2
  exit 1
fi

root=${COLD_ROOT:-$(mktemp -d /var/tmp/tessera-cold.XXXXXX)}
mkdir -p "$root/home"
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export HOME=$root/home
export CARGO_HOME=$HOME/.cargo GOPATH=$HOME/go GOCACHE=$HOME/.cache/go-build GOMODCACHE=$HOME/go/pkg/mod
unset CARGO_TARGET_DIR TESSERA_CACHE
git clone --quiet "$repo" "$root/repo"
cd "$root/repo"
echo "cold-check: clone of $(git rev-parse --short HEAD) in $root/repo, HOME=$HOME" >&2

steps=() times=() results=()
# step NAME COMMAND...: run it, log to $root/NAME.log, record its time.
step() {
  local name=$1 start=$SECONDS rc=0; shift
  echo ">> $name" >&2
  "$@" >"$root/$name.log" 2>&1 </dev/null || rc=$?
  steps+=("$name") times+=($((SECONDS - start))) results+=("$([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)")")
  if [[ $rc != 0 ]]; then tail -30 "$root/$name.log" >&2; fi
  return $rc
}

status=0
{ step build-cluster-tools e2e/build.sh &&
  step cluster-up make --no-print-directory cluster-up &&
  step tessera-image make --no-print-directory image &&
  step install-and-ready scripts/up.sh; } || status=1
[[ $status == 0 ]] && grep -q "redis-cli" "$root/install-and-ready.log" || status=1
step cluster-down make --no-print-directory down || true
if [[ $status == 0 && ${COLD_TEST:-0} == 1 ]]; then
  step ci-make-test env CI=true bash .ci/run || status=1
fi

echo
printf '%-22s %8s  %s\n' step seconds result
total=0
for i in "${!steps[@]}"; do
  printf '%-22s %8s  %s\n' "${steps[$i]}" "${times[$i]}" "${results[$i]}"
  [[ ${steps[$i]} == cluster-down ]] || total=$((total + times[i]))
done
printf '%-22s %8s\n' total "$total"
echo "logs: $root/<step>.log; make up printed:"
sed -n '/^>> Ready/,$p' "$root/install-and-ready.log" 2>/dev/null | head -20
exit $status
