#!/usr/bin/env bash
# Installs (once, cached) and runs a real S3-compatible server for the backup
# tests: versitygw (github.com/versity/versitygw), built from the Go module
# proxy, serving a plain directory (its "posix" backend).
#
#   scripts/s3-server.sh install          build into ~/.cache/tessera/versitygw-<v>/ (idempotent)
#   scripts/s3-server.sh path             print the binary's path (installing first)
#   scripts/s3-server.sh start DIR ADDR   run in the background on ADDR (127.0.0.1:PORT or
#                                         198.18.0.1:PORT only), data under DIR; prints the PID
#
# Credentials: access key "tessera", secret "tessera-secret" (test-only).
set -euo pipefail

VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE="${TESSERA_CACHE:-$HOME/.cache/tessera}/versitygw-${VERSION}"
BIN="$CACHE/bin/versitygw"
export S3_ACCESS_KEY="${S3_ACCESS_KEY:-tessera}"
export S3_SECRET_KEY="${S3_SECRET_KEY:-tessera-secret}"

install() {
  if [[ -x "$BIN" ]]; then return 0; fi
  command -v go >/dev/null || { echo "s3-server: go is needed to build versitygw" >&2; exit 1; }
  mkdir -p "$CACHE/bin"
  echo "s3-server: building versitygw $VERSION (once; cached in $CACHE)" >&2
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install "github.com/versity/versitygw/cmd/versitygw@${VERSION}"
  [[ -x "$BIN" ]]
}

case "${1:-install}" in
  install) install ;;
  path) install; echo "$BIN" ;;
  start)
    dir="${2:?data dir}"; addr="${3:?address}"
    case "$addr" in
      127.0.0.1:*|198.18.0.1:*) ;;
      *) echo "s3-server: refusing to bind $addr (127.0.0.1 or 198.18.0.1 only)" >&2; exit 2 ;;
    esac
    install
    mkdir -p "$dir"
    ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
      "$BIN" --port "$addr" posix "$dir" >"$dir.log" 2>&1 &
    echo $!
    ;;
  *) echo "usage: $0 install|path|start DIR ADDR" >&2; exit 2 ;;
esac
