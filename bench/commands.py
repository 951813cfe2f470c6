#!/usr/bin/env python3
"""The commands applications build on, a Tessera node and redis-server side
by side (used by bench/node.py; `python3 bench/commands.py` runs this part
alone).

Rows, each at -P 1 and -P 16, one load generator for both servers
(`tessera loadgen`, src/cli/loadgen.rs: one thread, 50 connections, pinned
to core 1; the servers to core 0, persistence off):
- EVALSHA of a script that SETs its key and returns 1;
- MULTI, five SETs on keys of one slot, EXEC (an operation is the block);
- PUBLISH to a channel 100 subscribers read (they are connections of the
  same generator, draining every message);
- a BLPOP/LPUSH ping-pong: 25 pairs of connections, each pusher sends a
  batch of LPUSHes and waits until its popper's BLPOPs have taken them (an
  operation is one pop).
Each row runs in blocks: both servers started fresh, then A B B A (A
alternating between blocks); the median of each server's runs and their
ratio (tessera / redis ops/s) are reported. Target: >= 1.0 at -P 16.
Traffic stays on 127.0.0.1.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node as bench  # noqa: E402  (bench/node.py: Server, TESSERA)

# (name, loadgen arguments, what an operation is)
ROWS = [
    ("evalsha", ["--command", "evalsha"], "EVALSHA (a SET in the script)"),
    ("multi", ["--command", "multi"], "MULTI + 5 SET + EXEC"),
    ("publish", ["--command", "publish", "--subscribers", "100"], "PUBLISH to 100 subscribers"),
    ("blpop", ["--command", "blpop", "--conns", "25"], "BLPOP woken by LPUSH (pairs)"),
]


def load(port, args, pipeline, seconds):
    """One loadgen run: ops/s and the batch round trip's p99 (ms)."""
    conns = [] if "--conns" in args else ["--conns", "50"]
    cmd = ["taskset", "-c", "1", bench.TESSERA, "loadgen", "--addr", f"127.0.0.1:{port}",
           "-P", str(pipeline), "--seconds", str(seconds)] + conns + args
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}): {run.stderr.strip()}")
    r = json.loads(run.stdout.strip().splitlines()[-1])
    if r["errors"]:
        raise RuntimeError(f"{' '.join(cmd)}: {r['errors']} error replies, first: {r['first_error']}")
    return r["ops"], r["p99_ms"]


def run(reps=4, seconds=2.0, only=None, pipelines=(1, 16)):
    """Measures every row (or those named in `only`); returns (table rows,
    RESULT fields)."""
    table, result = [], {}
    for name, args, label in ROWS:
        if only and name not in only:
            continue
        for p in pipelines:
            runs = {"tessera": [], "redis": []}
            for b in range(max(1, reps // 2)):
                servers = {k: bench.Server(k, "off") for k in ("tessera", "redis")}
                try:
                    order = ["tessera", "redis"] if b % 2 == 0 else ["redis", "tessera"]
                    for k in order + order[::-1]:
                        runs[k].append(load(servers[k].port, args, p, seconds))
                finally:
                    for s in servers.values():
                        s.stop()
            med = {k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v))
                   for k, v in runs.items()}
            ratio = med["tessera"][0] / med["redis"][0]
            table.append((label, p, med["tessera"], med["redis"], ratio))
            result[f"cmd_{name}_P{p}_ratio"] = f"{ratio:.2f}"
            print(f"  {label} -P {p}: tessera {med['tessera'][0]:.0f}/s redis {med['redis'][0]:.0f}/s "
                  f"ratio {ratio:.2f}; runs (k/s) tessera "
                  + " ".join(f"{x / 1000:.0f}" for x, _ in runs["tessera"]) + ", redis "
                  + " ".join(f"{x / 1000:.0f}" for x, _ in runs["redis"]), file=sys.stderr, flush=True)
    result["cmd_targets_met"] = str(all(r[4] >= 1.0 for r in table if r[1] == 16)).lower()
    return table, result


def print_table(table, reps, seconds):
    print(f"`tessera loadgen` against both servers (50 connections, {seconds:g} s per run, median of {reps} "
          "runs per server in blocks of A B B A; servers on core 0, generator on core 1, persistence off)")
    print()
    print("| operation | -P | tessera ops/s | p99 ms | redis ops/s | p99 ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, p, t, r, ratio in table:
        print(f"| {label} | {p} | {t[0]:.0f} | {t[1]:.3f} | {r[0]:.0f} | {r[1]:.3f} | {ratio:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4, help="runs per server and row (even)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rows", default="", help="comma-separated rows to run (default all): "
                    + ",".join(name for name, _, _ in ROWS))
    ap.add_argument("--pipelines", default="1,16", help="comma-separated -P values (default 1,16)")
    a = ap.parse_args()
    only = [r for r in a.rows.split(",") if r]
    unknown = set(only) - {name for name, _, _ in ROWS}
    if unknown:
        sys.exit(f"unknown rows: {', '.join(sorted(unknown))}")
    pipelines = [int(p) for p in a.pipelines.split(",") if p]
    if not os.path.exists(bench.TESSERA):
        sys.exit(f"{bench.TESSERA} not built (cargo build --release)")
    table, result = run(a.reps, a.seconds, only, pipelines)
    print_table(table, a.reps, a.seconds)
    print()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
