#!/usr/bin/env python3
"""Two more clients for `make bench-failover`: redis-py's RedisCluster and
redis-cli, writing to one shard while the benchmark hangs its primary.

Driven over stdin/stdout by tests/e2e_failover.rs (bench mode), one process
per round:
  started:  the script prints `ready` once both clients have written.
  `fault <unix seconds>`: when the fault happened (wall clock).
  `stop`:   keeps writing until each client has been writable again for a
            second (bounded by --max-wait), then stops both and prints
            `writable <json>`: per client, seconds from the fault to the end
            of its longest gap in acknowledged writes, acknowledged count and
            failed attempts.
  `verify`: reads every acknowledged key back through a fresh RedisCluster
            and prints `verified <json>`: per client, keys missing or with a
            different value.

The clients are set up as docs/failover.md tells a user to: redis-py with
`socket_timeout=1`, `socket_connect_timeout=1` and the member addresses as
startup nodes; redis-cli as a shell loop would run it, one `redis-cli -c`
per write against the client Service, under `timeout 1` (redis-cli has no
response timeout of its own, so a write to a hung primary would wait
forever).
"""

import argparse
import json
import subprocess
import sys
import threading
import time

from redis.cluster import ClusterNode, RedisCluster

TIMEOUT_S = 1.0


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []  # (key, value, wall time of the OK)
        self.errors = 0
        self.last_error = ""

    def ack(self, key, value):
        with self.lock:
            self.acked.append((key, value, time.time()))

    def error(self, e):
        with self.lock:
            self.errors += 1
            self.last_error = str(e)[:200]

    def times(self):
        with self.lock:
            return [t for _, _, t in self.acked]


def redis_py_writer(args, log, stop):
    seeds = [ClusterNode(ip, 6379) for ip in args.seeds.split(",")]
    client = None
    i = 0
    while not stop.is_set():
        try:
            if client is None:
                client = RedisCluster(
                    startup_nodes=seeds,
                    password=args.password,
                    socket_timeout=TIMEOUT_S,
                    socket_connect_timeout=TIMEOUT_S,
                )
            i += 1
            key, value = f"{{{args.tag}}}:py:{i}", f"py-{i}"
            if client.set(key, value):
                log.ack(key, value)
        except Exception as e:  # noqa: BLE001 - every failure is a failed attempt
            log.error(f"{type(e).__name__}: {e}")
            time.sleep(0.05)
            # The client object stays: RedisCluster refreshes its slot map
            # itself (even after RedisClusterUnreachableError), and how fast
            # it does is what is measured.


def redis_cli_writer(args, log, stop):
    i = 0
    while not stop.is_set():
        i += 1
        key, value = f"{{{args.tag}}}:cli:{i}", f"cli-{i}"
        cmd = [
            "timeout", str(TIMEOUT_S), "redis-cli", "-c", "-h", args.service,
            "-p", "6379", "--no-auth-warning", "-a", args.password,
            "SET", key, value,
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip() == "OK":
                log.ack(key, value)
                continue
            log.error(out.stdout.strip() or out.stderr.strip() or f"exit {out.returncode}")
        except (subprocess.SubprocessError, OSError) as e:
            log.error(e)
        time.sleep(0.05)


def time_to_writable(times, fault):
    """Seconds from the fault to the end of the longest gap between two
    acknowledged writes after it (the fault itself opens the first gap)."""
    prev, worst, gap = fault, None, 0.0
    for t in times:
        if t < fault:
            continue
        if t - prev > gap:
            gap, worst = t - prev, t
        prev = t
    return None if worst is None else worst - fault


def recovered(times, fault, now):
    ttw = time_to_writable(times, fault)
    return ttw is not None and times and now - times[-1] < 0.3 and now - (fault + ttw) >= 1.0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", required=True, help="member IPs, comma-separated")
    p.add_argument("--service", required=True, help="the client Service's IP")
    p.add_argument("--password", required=True)
    p.add_argument("--tag", required=True, help="a hash tag of the shard under test")
    p.add_argument("--max-wait", type=float, default=60.0)
    args = p.parse_args()

    logs = {"redis-py": Log(), "redis-cli": Log()}
    stop = threading.Event()
    threads = [
        threading.Thread(target=redis_py_writer, args=(args, logs["redis-py"], stop), daemon=True),
        threading.Thread(target=redis_cli_writer, args=(args, logs["redis-cli"], stop), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.time() + args.max_wait
    while not all(len(log.times()) >= 5 for log in logs.values()):
        if time.time() > deadline:
            print("error " + json.dumps({k: v.last_error for k, v in logs.items()}), flush=True)
            return 1
        time.sleep(0.05)
    print("ready", flush=True)

    fault = None
    for line in sys.stdin:
        word, _, rest = line.strip().partition(" ")
        if word == "fault":
            fault = float(rest)
        elif word == "stop":
            fault = fault if fault is not None else time.time()
            deadline = time.time() + args.max_wait
            done = {}
            while time.time() < deadline and len(done) < len(logs):
                for k, log in logs.items():
                    if k not in done and recovered(log.times(), fault, time.time()):
                        done[k] = time_to_writable(log.times(), fault)
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(timeout=10)
            out = {
                k: {
                    # null: not writable again within --max-wait
                    "writable_s": done.get(k),
                    "acked": len(log.acked),
                    "errors": log.errors,
                    "last_error": log.last_error,
                }
                for k, log in logs.items()
            }
            print("writable " + json.dumps(out), flush=True)
        elif word == "verify":
            seeds = [ClusterNode(ip, 6379) for ip in args.seeds.split(",")]
            client = RedisCluster(startup_nodes=seeds, password=args.password,
                                  socket_timeout=5, socket_connect_timeout=5)
            out = {}
            for k, log in logs.items():
                lost = 0
                # One hash tag: one slot, so a pipeline is one node's.
                for at in range(0, len(log.acked), 1000):
                    chunk = log.acked[at:at + 1000]
                    pipe = client.pipeline(transaction=False)
                    for key, _, _ in chunk:
                        pipe.get(key)
                    for (_, value, _), got in zip(chunk, pipe.execute()):
                        if got is None or got.decode() != value:
                            lost += 1
                out[k] = {"lost": lost, "acked": len(log.acked)}
            print("verified " + json.dumps(out), flush=True)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
