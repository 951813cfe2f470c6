#!/usr/bin/env python3
"""Replication benchmark: throughput and latency of acknowledged writes.

One load generator for every row, so the numbers compare: `tessera loadgen`
(src/cli/loadgen.rs, one thread) driving 50 connections that pipeline P
writes per round trip; median of 3 runs per row. Servers and generator share
the machine's two cores unpinned. For Tessera a write is `SET` (the node
itself waits for the shard's acknowledgement rule before replying). For the Redis reference each write is
`SET` followed by `WAIT 1 0` (Redis' only way to wait for a replica), and the
pair counts as one write. Latency is per round trip (a batch of P writes).

Rows: tessera unreplicated; tessera RF=3 (1 primary + 2 replicas) in
eventual, quorum, strong; redis-server 1 primary + 1 replica with WAIT 1 0.
All nodes use fsync everysec. Prints a markdown table whose last line is
`RESULT key=value ...` (docs/benchmarks.md keeps the current one).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tessera")
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
CONNS = int(os.environ.get("BENCH_CONNS", "50"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
# Not pinned: every setup gets the same two cores. Pinning a primary and its
# two replicas to one core (as bench/node.py pins one server) would measure
# three processes sharing a core, not replication; in production each replica
# has its own machine. The Redis pair runs under the same rule.
SERVER_CORE, CLIENT_CORE = "0,1", "0,1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def load(port, pipeline, with_wait):
    """One row: the median (by writes/s) of REPS runs of `tessera loadgen`."""
    runs = sorted((load_once(port, pipeline, with_wait) for _ in range(REPS)), key=lambda r: r["ops"])
    return runs[len(runs) // 2]


def load_once(port, pipeline, with_wait):
    """One run of `tessera loadgen` (Rust, one thread)."""
    args = ["taskset", "-c", CLIENT_CORE, BIN, "loadgen", "--addr", f"127.0.0.1:{port}", "--conns", str(CONNS),
            "-P", str(pipeline), "--seconds", str(SECONDS)]
    if with_wait:
        args += ["--wait-replicas", "1"]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({run.returncode}): {run.stderr.strip()}")
    out = run.stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"ops": r["ops"], "p50": r["p50_ms"], "p99": r["p99_ms"], "errors": r["errors"],
            "first_error": r.get("first_error")}


def http(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Tessera:
    def __init__(self, idx, consistency, tmp):
        self.id = "%040x" % (0xbe0000 + idx)
        self.port, self.admin = free_port(), free_port()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, BIN, "node", "--bind", "127.0.0.1", "--port", str(self.port),
                                      "--admin-port", str(self.admin), "--data-dir", os.path.join(tmp, f"n{idx}"),
                                      "--node-id", self.id, "--consistency", consistency, "--replicas", "2",
                                      "--fsync", "everysec"],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(tmp, f"n{idx}.log"), "wb"))
        self.log = os.path.join(tmp, f"n{idx}.log")
        wait_port(self.port)
        wait_port(self.admin)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def tessera_cluster(consistency, tmp, rf):
    nodes = [Tessera(i, consistency, tmp) for i in range(rf)]
    if rf > 1:
        http(nodes[0].admin, "/v1/promote", {"epoch": 1, "replicas": rf - 1})
        for n in nodes[1:]:
            http(n.admin, "/v1/follow", {"epoch": 1, "primary": {"id": nodes[0].id, "host": "127.0.0.1", "port": nodes[0].port}})
        end = time.time() + 20
        while time.time() < end:
            st = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{nodes[0].admin}/v1/status").read())
            if sum(1 for r in st["replication"]["replicas"] if r["connected"]) == rf - 1:
                break
            time.sleep(0.05)
    return nodes


def redis_pair(tmp):
    rs = shutil.which("redis-server") or "/usr/bin/redis-server"
    p1, p2 = free_port(), free_port()
    procs = []
    for port, extra in ((p1, []), (p2, ["--replicaof", "127.0.0.1", str(p1)])):
        d = os.path.join(tmp, f"redis{port}")
        os.makedirs(d)
        procs.append(subprocess.Popen(["taskset", "-c", SERVER_CORE, rs, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
                                       "--appendonly", "yes", "--appendfsync", "everysec"] + extra,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
    # Wait for the replica link.
    end = time.time() + 20
    while time.time() < end:
        s = socket.create_connection(("127.0.0.1", p1))
        s.sendall(cmd("INFO", "replication"))
        time.sleep(0.1)
        if b"connected_slaves:1" in s.recv(65536):
            s.close()
            break
        s.close()
    # Warm-up: the first WAIT returns once the replica has synced.
    s = socket.create_connection(("127.0.0.1", p1))
    s.sendall(cmd("SET", "warmup", "1") + cmd("WAIT", 1, 10000))
    buf = b""
    while buf.count(b"\r\n") < 2:
        buf += s.recv(4096)
    s.close()
    return p1, procs


def main():
    rows = []
    tmp = tempfile.mkdtemp(prefix="tessera-bench-repl-")
    try:
        configs = [("tessera unreplicated", "eventual", 1), ("tessera RF=3 eventual", "eventual", 3),
                   ("tessera RF=3 quorum", "quorum", 3), ("tessera RF=3 strong", "strong", 3)]
        for name, mode, rf in configs:
            d = os.path.join(tmp, name.replace(" ", "_"))
            os.makedirs(d)
            nodes = tessera_cluster(mode, d, rf)
            try:
                for p in (1, 16):
                    try:
                        r = load(nodes[0].port, p, False)
                    except Exception:
                        # What the nodes said (warnings and errors) before the failure.
                        for n in nodes:
                            with open(n.log, "rb") as f:
                                lines = [l for l in f.read().decode(errors="replace").splitlines()
                                         if "WARN" in l or "ERROR" in l or "panick" in l]
                            print(f"--- {n.log} (warnings/errors, last 20):", *lines[-20:], sep="\n",
                                  file=sys.stderr)
                        raise
                    rows.append((name, p, r))
                    print(f"{name:28} -P {p:2}: {r['ops']:10.0f} ops/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  errors {r['errors']} {r['first_error'] or ''}", flush=True)
            finally:
                for n in nodes:
                    n.stop()
        port, procs = redis_pair(tmp)
        try:
            for p in (1, 16):
                r = load(port, p, True)
                rows.append(("redis 7 + 1 replica, WAIT 1 0", p, r))
                print(f"{'redis + WAIT 1 0':28} -P {p:2}: {r['ops']:10.0f} ops/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  errors {r['errors']} {r['first_error'] or ''}", flush=True)
        finally:
            for pr in procs:
                pr.kill()
                pr.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    get = lambda name, p: next(r for n, pp, r in rows if n.startswith(name) and pp == p)
    un16 = get("tessera unreplicated", 16)["ops"]
    q16 = get("tessera RF=3 quorum", 16)["ops"]
    red16 = get("redis", 16)["ops"]
    q_vs_un = q16 / un16 if un16 else 0
    q_vs_redis = q16 / red16 if red16 else 0
    lines = ["", f"Same load generator for every row (`tessera loadgen`, one thread; servers and generator unpinned on the 2 cores): {CONNS} connections, median of {REPS} runs, "
             f"{SECONDS:.0f} s per row, 64-byte values, fsync everysec everywhere, 127.0.0.1. A Tessera write is `SET` "
             "(the node waits for the shard's rule before replying); a Redis write is `SET` + `WAIT 1 0`. "
             "Latency is per round trip of a batch of P writes.", "",
             "| setup | P | writes/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, p, r in rows:
        lines.append(f"| {name} | {p} | {r['ops']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['errors']} |")
    lines.append("")
    lines.append(f"quorum at -P 16: {q_vs_un:.2f}x the unreplicated node (target >= 0.5), "
                 f"{q_vs_redis:.2f}x Redis+WAIT (target >= 3).")
    lines.append("")
    result = (f"RESULT quorum_vs_unreplicated_p16={q_vs_un:.2f} quorum_vs_redis_wait_p16={q_vs_redis:.2f} "
              f"unreplicated_p16={un16:.0f} quorum_p16={q16:.0f} redis_wait_p16={red16:.0f} "
              f"eventual_p16={get('tessera RF=3 eventual', 16)['ops']:.0f} strong_p16={get('tessera RF=3 strong', 16)['ops']:.0f}")
    lines.append(result)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
