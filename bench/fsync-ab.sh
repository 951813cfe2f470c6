#!/usr/bin/env bash
# Paired A/B of two tessera binaries under --fsync always (e.g. before and
# after a log change): rounds of A B B A, the node pinned to core 0, one
# `redis-benchmark -t set -P 1 -r 1000000 -d 64` run on core 1 per node
# start. Prints each run's SET/s, p50, and the node's mean fsync time
# (tessera_wal_fsync_seconds_total / tessera_wal_fsyncs_total).
# usage: bench/fsync-ab.sh <binary A> <binary B> [rounds=3] [clients=1] [requests=20000]
# Traffic stays on 127.0.0.1; stops by itself.
set -euo pipefail
A=$1 B=$2 ROUNDS=${3:-3} C=${4:-1} N=${5:-20000}
PORT=${FSYNC_AB_PORT:-7901} ADMIN=$((PORT + 1))
DATA=$(mktemp -d /tmp/tessera-fsync-ab.XXXXXX)
trap 'rm -rf "$DATA"' EXIT

one() {
  local bin=$1 label=$2
  rm -rf "$DATA/d"
  taskset -c 0 "$bin" node --bind 127.0.0.1 --port "$PORT" --admin-port "$ADMIN" \
    --data-dir "$DATA/d" --fsync always 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local out m n s
  out=$(taskset -c 1 redis-benchmark -p "$PORT" -t set -n "$N" -c "$C" -P 1 -r 1000000 -d 64 --csv 2>/dev/null | tail -1)
  m=$(curl -fsS "127.0.0.1:$ADMIN/metrics") || m=""
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [[ -n $m && -n $out ]] || { echo "$label: no benchmark result or no metrics from the node" >&2; exit 1; }
  n=$(awk '/^tessera_wal_fsyncs_total/{print $2}' <<<"$m")
  s=$(awk '/^tessera_wal_fsync_seconds_total/{print $2}' <<<"$m")
  echo "$label set_per_s $(cut -d, -f2 <<<"$out" | tr -d '"') p50_ms $(cut -d, -f6 <<<"$out" | tr -d '"') fsyncs $n mean_fsync_us $(python3 -c "print(round($s / max($n, 1) * 1e6, 1))")"
}

for _ in $(seq "$ROUNDS"); do
  one "$A" A; one "$B" B; one "$B" B; one "$A" A
done
