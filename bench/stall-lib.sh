# Shared by the stall benches (snapshot-free-stall.sh, prune-stall.sh):
# source it, then `stall_node BIN PORT ADMIN DIR` starts a node under
# `--fsync always` with data in DIR/data (its PID in $NP, stopped and DIR
# removed on exit), `stall_load PORT` loads 1M keys x 1000 B through
# `redis-cli --pipe`, `disc_ms` prints DIR's disk's discard time (ms).
# Traffic stays on 127.0.0.1.
stall_node() {
  local bin=$1 port=$2 admin=$3 dir=$4
  STALL_DEV=$(basename "$(realpath "/sys/dev/block/$(mountpoint -d "$(df --output=target "$dir" | tail -1)")")")
  "$bin" node --bind 127.0.0.1 --port "$port" --admin-port "$admin" --data-dir "$dir/data" --fsync always 2>"$dir/node.log" &
  NP=$!
  # shellcheck disable=SC2064  # expand now: the values are fixed
  trap "kill $NP 2>/dev/null; wait $NP 2>/dev/null; rm -rf '$dir'" EXIT
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
disc_ms() { awk -v d="$STALL_DEV" '$3 == d {print $(3+15)}' /proc/diskstats; }
stall_load() {
  python3 -c '
import sys
v = b"v" * 1000
w = sys.stdout.buffer
for i in range(1000000):
    k = b"key:%010d" % i
    w.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
' | redis-cli -p "$1" --pipe >/dev/null
}
