#!/usr/bin/env bash
# Paired A/B of the node's idle spin (docs/node.md, "Idle spin"): one node at
# a time on core 0 (--idle-spin-us 0 vs N), redis-benchmark -P 1 on core 1,
# rounds of off/on/on/off; prints each run and the on/off ratio per round.
# Usage: bench/idle-spin-ab.sh [rounds=8] [test=get] [spin_us=50]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-8} TEST=${2:-get} SPIN=${3:-50}
B=target/release/tessera
[ -x "$B" ] || cargo build --release --locked
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
ADMIN=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
run() {
  taskset -c 0 "$B" node --bind 127.0.0.1 --port "$PORT" --admin-port "$ADMIN" \
    --data-dir /nonexistent --no-persistence --idle-spin-us "$1" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  taskset -c 1 redis-benchmark -p "$PORT" -t "$TEST" -r 1000000 -d 64 -c 50 -n 300000 -P 1 --csv -q \
    | tail -1 | cut -d, -f2 | tr -d '"'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for r in $(seq "$ROUNDS"); do
  a=$(run 0); b=$(run "$SPIN"); c=$(run "$SPIN"); d=$(run 0)
  echo "round $r: off $a $d  on $b $c  on/off $(python3 -c "print(round(($b+$c)/($a+$d),3))")"
done
