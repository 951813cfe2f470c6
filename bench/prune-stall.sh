#!/usr/bin/env bash
# SET latency under --fsync always while retention deletes a ~1 GB backup
# from a directory target on the node's own disk: `tessera backup prune`
# (large files given back in paced slices) vs `rm -r` of the same backup
# (every block freed at once: what a plain unlink does; on a disk mounted
# with `discard` the device discards it all at the next journal commit).
# 1M keys x 1000 B loaded; per round a fresh backup is taken (so two are
# kept), the disk settles, then `redis-benchmark -t set -c 10` runs while,
# 2 s in, the older backup is deleted one way or the other. Rounds run
# rm, prune, prune, rm. Prints each round's latency summary (the max is the
# stall), the delete's wall time and the disk's discard time.
# usage: bench/prune-stall.sh [tessera binary, default target/release/tessera] [requests, default 400000]
# Traffic stays on 127.0.0.1; stops by itself.
set -euo pipefail
BIN=${1:-target/release/tessera} N=${2:-400000}
PORT=${STALL_PORT:-7511} ADMIN=$((PORT + 1))
D=$(mktemp -d /var/tmp/tessera-prune-stall.XXXXXX)
T=$D/target
source "$(dirname "${BASH_SOURCE[0]}")/stall-lib.sh"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Until the disk has discarded nothing for 1 s (at most 30 s).
settle() {
  local last quiet=0 n
  last=$(disc_ms)
  for n in $(seq 150); do
    sync; sleep 0.2
    if [ "$(disc_ms)" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$(disc_ms); fi
    [ "$quiet" -ge 5 ] && return
  done
}
stall_node "$BIN" "$PORT" "$ADMIN" "$D"
stall_load "$PORT"
backup() { "$BIN" backup run --target "$T" --cluster bench --nodes "127.0.0.1:$ADMIN" >/dev/null 2>"$D/backup.log"; }
backup
round() {
  local how=$1 old mb d1 d2 s e
  backup
  old=$(ls "$T/bench/backups" | sort | head -1)
  mb=$(du -sm "$T/bench/backups/$old" | cut -f1)
  [ "$(ls "$T/bench/backups" | wc -l)" = 2 ] || { echo "expected 2 backups" >&2; exit 1; }
  settle
  d1=$(disc_ms)
  redis-benchmark -p "$PORT" -t set -n "$N" -c 10 -d 64 -r 1000000 > "$D/bench.txt" 2>&1 &
  local bp=$!
  sleep 2
  s=$(now_ms)
  if [ "$how" = rm ]; then
    rm -r "$T/bench/backups/$old"; sync
  else
    "$BIN" backup prune --target "$T" --cluster bench --keep 1 >/dev/null 2>"$D/prune.log"; sync
  fi
  e=$(now_ms)
  if ! kill -0 "$bp" 2>/dev/null; then echo "redis-benchmark ended before the delete did: raise the request count" >&2; exit 1; fi
  wait "$bp"
  d2=$(disc_ms)
  [ ! -e "$T/bench/backups/$old" ] || { echo "$how left $old" >&2; exit 1; }
  printf '%-6s %4d MB: delete %5d ms, discarding %5d ms; SET latency ms (avg min p50 p95 p99 max):%s; %s\n' \
    "$how" "$mb" "$((e - s))" "$((d2 - d1))" \
    "$(grep -A2 'latency summary' "$D/bench.txt" | tail -1 | tr -s ' ')" \
    "$(grep -o 'throughput summary: .*' "$D/bench.txt")"
}
for how in rm prune prune rm; do round "$how"; done
