#!/usr/bin/env bash
# Does freeing a large file stall other I/O on this disk? (On a filesystem
# mounted with `discard`, freed blocks are discarded at the next journal
# commit, all at once.) Writes a 1 GiB file, then times a 1 GiB O_DIRECT
# write while the first file is (a) removed at once, (b) cut down in 16 MiB
# slices, each synced and followed by a pause as long as it took (what
# `node::release` does). Prints the write
# time and the disk's discard count/time (/proc/diskstats) for each.
# usage: bench/discard-stall.sh [dir on the disk to test, default /var/tmp] [rounds=2]
set -euo pipefail
DIR=$(mktemp -d "${1:-/var/tmp}/tessera-discard.XXXXXX"); ROUNDS=${2:-2}
trap 'rm -rf "$DIR"' EXIT
dev=$(basename "$(realpath "/sys/dev/block/$(mountpoint -d "$(df --output=target "$DIR" | tail -1)")")")
stats() { awk -v d="$dev" '$3 == d {print $(3+12), $(3+15)}' /proc/diskstats; }
one() {
  local mode=$1
  dd if=/dev/urandom of="$DIR/big" bs=1M count=1024 conv=fsync status=none
  sleep 1
  read -r c1 t1 < <(stats)
  if [ "$mode" = at-once ]; then
    (rm "$DIR/big"; sync) &
  else
    (for n in $(seq 1008 -16 0); do
       t=$(date +%s%N); truncate -s "${n}M" "$DIR/big"; sync "$DIR/big"
       sleep "$(awk -v d=$(( $(date +%s%N) - t )) 'BEGIN {printf "%.3f", (d > 5e7 ? 5e7 : d) / 1e9}')"
     done; rm "$DIR/big") &
  fi
  local bg=$! s e
  s=$(date +%s%N)
  dd if=/dev/zero of="$DIR/w" bs=1M count=1024 oflag=direct conv=fsync status=none
  e=$(date +%s%N)
  wait "$bg"
  read -r c2 t2 < <(stats)
  rm -f "$DIR/w"
  echo "free $mode: 1 GiB direct write took $(( (e - s) / 1000000 )) ms; discards $((c2 - c1)), $((t2 - t1)) ms"
}
for _ in $(seq "$ROUNDS"); do one at-once; one sliced; done
