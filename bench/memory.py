#!/usr/bin/env python3
"""Memory per key: a Tessera node and redis-server side by side (used by
bench/node.py; `python3 bench/memory.py` runs this part alone).

Rows: strings of 16, 64 and 1024 bytes (`SET`), small hashes (10 fields),
small sets (10 members) and small sorted sets (10 members), each loaded
into a fresh server through `redis-cli --pipe`, with persistence off and
with the log on (`--fsync everysec` as pods run, against Redis'
`appendonly yes, appendfsync everysec`); then the write pattern of
applications: `redis-benchmark -t set -P 16 -c 50 -d 64 -r 100000000`
(random keys from 50 clients). Each figure is the growth of the server's
RSS (and of INFO's used_memory) from just after start to after the load
once it settled (background persistence the load started finished, RSS
steady over a second), divided by the keys the server then holds.
"""
import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node as bench  # noqa: E402  (bench/node.py: Server, free ports)


def used_memory(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True,
                         text=True, timeout=30).stdout
    m = re.search(r"^used_memory:(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def dbsize(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True,
                         timeout=30).stdout
    return int(out.strip())


def resp(*args):
    parts = [f"*{len(args)}\r\n"]
    for a in args:
        parts.append(f"${len(a)}\r\n{a}\r\n")
    return "".join(parts)


def commands(row, i):
    """The command(s) that create key i of a row."""
    if row.startswith("string"):
        size = int(row[len("string"):])
        return resp("SET", f"key:{i:012d}", "x" * size)
    if row == "hash":
        args = ["HSET", f"h:{i:010d}"]
        for f in range(10):
            args += [f"field:{f}", f"value:{i:08d}:{f}"]
        return resp(*args)
    if row == "set":
        return resp("SADD", f"s:{i:010d}", *(f"member:{i:08d}:{m}" for m in range(10)))
    if row == "zset":
        args = ["ZADD", f"z:{i:010d}"]
        for m in range(10):
            args += [str(m * 1.5), f"member:{i:08d}:{m}"]
        return resp(*args)
    raise ValueError(row)


def load(port, row, count):
    chunk = 50_000
    for start in range(0, count, chunk):
        data = "".join(commands(row, i) for i in range(start, min(count, start + chunk)))
        out = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=data,
                             capture_output=True, text=True, timeout=600)
        if "errors: 0" not in out.stdout:
            raise RuntimeError(out.stdout + out.stderr)


def random_sets(port, requests):
    subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t", "set", "-n",
                    str(requests), "-P", "16", "-c", "50", "-d", "64", "-r", "100000000", "-q"],
                   capture_output=True, text=True, timeout=900, check=True)


def persisting(port):
    """Whether the server runs background persistence (a Tessera snapshot,
    Redis' AOF rewrite or RDB save)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "persistence"], capture_output=True,
                         text=True, timeout=30).stdout
    return "rdb_bgsave_in_progress:1" in out or "aof_rewrite_in_progress:1" in out


def settle(server, timeout=20):
    """Waits for the RSS a server keeps: the log flushed, background
    persistence the load started finished (its buffers freed), and RSS
    steady over a second (the allocator returns freed memory with a delay);
    at least 1.5 s."""
    time.sleep(1.5)
    end = time.time() + timeout
    last = server.rss()
    while time.time() < end:
        time.sleep(1)
        now = server.rss()
        if not persisting(server.port) and abs(now - last) <= 0.005 * max(last, 1):
            return
        last = now


def measure(kind, mode, row, count):
    """(RSS bytes per key, used_memory bytes per key, keys) of one row."""
    s = bench.Server(kind, mode)
    try:
        time.sleep(0.3)
        rss0, used0 = s.rss(), used_memory(s.port)
        if row == "random64":
            random_sets(s.port, count)
        else:
            load(s.port, row, count)
        settle(s)
        keys = dbsize(s.port)
        if row != "random64" and keys != count:
            raise RuntimeError(f"{kind} holds {keys} keys, expected {count}")
        return (s.rss() - rss0) / keys, (used_memory(s.port) - used0) / keys, keys
    finally:
        s.stop()


ROWS = [
    ("string16", "strings, 16-byte values", 1.0),
    ("string64", "strings, 64-byte values", 1.0),
    ("string1024", "strings, 1024-byte values", 0.2),
    ("hash", "hashes of 10 fields", 0.2),
    ("set", "sets of 10 members", 0.2),
    ("zset", "sorted sets of 10 members", 0.2),
    ("random64", "redis-benchmark -t set -P 16 -c 50 -d 64 -r 1e8", 1.0),
]


def run(keys, modes=("off", "everysec"), rows=None):
    """Measures every row; returns (table rows, RESULT fields)."""
    table, result = [], {}
    for row, label, share in ROWS:
        if rows and row not in rows:
            continue
        count = max(1000, int(keys * share))
        for mode in modes:
            t = measure("tessera", mode, row, count)
            r = measure("redis", mode, row, count)
            ratio = t[0] / r[0]
            table.append((label, mode, count, t, r, ratio))
            log = "log" if mode != "off" else "nolog"
            result[f"rss_ratio_{row}_{log}"] = f"{ratio:.2f}"
            print(f"  memory {label} ({mode}): tessera {t[0]:.0f} B/key rss {t[1]:.0f} B/key used, "
                  f"redis {r[0]:.0f} rss {r[1]:.0f} used, ratio {ratio:.2f}", file=sys.stderr, flush=True)
    return table, result


def print_table(table):
    print("| data | persistence | keys | tessera RSS B/key | used B/key | redis RSS B/key | used B/key | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for label, mode, count, t, r, ratio in table:
        print(f"| {label} | {mode} | {t[2]} | {t[0]:.0f} | {t[1]:.0f} | {r[0]:.0f} | {r[1]:.0f} | {ratio:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--modes", default="off,everysec")
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    table, result = run(args.keys, tuple(args.modes.split(",")), rows)
    print_table(table)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
