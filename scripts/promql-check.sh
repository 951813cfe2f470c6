#!/usr/bin/env bash
# Builds (once per source change, cached) the PromQL checker in
# scripts/promql-check/ — Prometheus' own rule-file and PromQL parser, from
# the Go module proxy — and prints the binary's path, or runs it.
#
#   scripts/promql-check.sh path                     build if needed, print the path
#   scripts/promql-check.sh test                     evaluate every alert with Prometheus'
#                                                    engine (go test; alerts_test.go)
#   scripts/promql-check.sh [RULES DASHBOARD]        check (default: the chart's files)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/scripts/promql-check"
key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
if [[ ${1:-} == test ]]; then
  command -v go >/dev/null || { echo "promql-check: go is needed to run the alert tests" >&2; exit 1; }
  cd "$src" && exec go test -mod=readonly -count=1 ./...
fi
CACHE="${TESSERA_CACHE:-$HOME/.cache/tessera}/promql-check-$key"
BIN="$CACHE/promql-check"

if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || { echo "promql-check: go is needed to build the checker" >&2; exit 1; }
  mkdir -p "$CACHE"
  echo "promql-check: building (once; cached in $CACHE)" >&2
  (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -o "$BIN.tmp" .) && mv "$BIN.tmp" "$BIN"
fi

case "${1:-check}" in
  path) echo "$BIN" ;;
  check) exec "$BIN" "$root/charts/tessera/files/alerts.yaml" "$root/charts/tessera/files/grafana-dashboard.json" ;;
  *) exec "$BIN" "$@" ;;
esac
