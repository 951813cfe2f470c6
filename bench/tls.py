#!/usr/bin/env python3
"""Tessera's TLS client port vs redis-server's TLS port, same run.

Both servers get a certificate of one test CA (made with openssl in a
temporary directory), persistence off, and are driven by
`redis-benchmark --tls --cacert <ca> -t set|get -r 1000000 -d 64 -c 50` at
-P 1 and -P 16. Servers run on core 0, the client on core 1 (when taskset
and two cores are there). Each row runs in blocks: both servers are started
fresh, then the test runs A B B A (A alternating between blocks); the table
gives each server's median ops/s and p99 (ms), and the ratio
tessera / redis of the medians (for p99: redis / tessera, so > 1 is better
for both).

Prints a markdown table and ends with one line
`RESULT set_ratio=… get_ratio=… set_p16_ratio=… get_p16_ratio=… p99_ratio=…`
(p99_ratio: the worst of the four rows). Traffic stays on 127.0.0.1.
"""
import argparse
import csv
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
TESSERA = os.path.join(TARGET, "release", "tessera")


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
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def make_pki(d):
    """A CA and a server certificate for 127.0.0.1 (openssl)."""
    def run(*a):
        subprocess.run(a, check=True, cwd=d, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth,clientAuth\n")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")
    return {k: os.path.join(d, k) for k in ("ca.crt", "tls.crt", "tls.key")}


def pinned(cmd, core):
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() >= 2:
        return ["taskset", "-c", str(core)] + cmd
    return cmd


class Server:
    def __init__(self, kind, pki):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"bench-tls-{kind}-")
        self.port, self.tls_port = free_port(), free_port()
        if kind == "tessera":
            cmd = [TESSERA, "node", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--admin-port", str(free_port()), "--data-dir", os.path.join(self.dir, "data"),
                   "--no-persistence", "--tls-port", str(self.tls_port),
                   "--tls-cert-file", pki["tls.crt"], "--tls-key-file", pki["tls.key"],
                   "--tls-ca-cert-file", pki["ca.crt"]]
            cmd += os.environ.get("BENCH_TESSERA_ARGS", "").split()
        else:
            cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--tls-port", str(self.tls_port), "--tls-cert-file", pki["tls.crt"],
                   "--tls-key-file", pki["tls.key"], "--tls-ca-cert-file", pki["ca.crt"],
                   "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                   "--dir", self.dir, "--protected-mode", "no"]
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(pinned(cmd, 0), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env)
        wait_port(self.tls_port)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench(port, ca, test, pipeline, requests):
    """(ops/s, p99 ms) of one redis-benchmark run over TLS."""
    cmd = ["redis-benchmark", "--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", str(port),
           "-t", test, "-r", "1000000", "-d", "64", "-c", "50", "-P", str(pipeline),
           "-n", str(requests), "--csv", "-q"]
    out = subprocess.run(pinned(cmd, 1), capture_output=True, text=True, timeout=600)
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if not rows:
        raise RuntimeError(f"redis-benchmark gave nothing: {out.stdout} {out.stderr}")
    r = rows[0]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    # "p95_latency_ms","p99_latency_ms","max_latency_ms"
    return float(r[1]), float(r[6])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "6")),
                    help="runs per server, test and pipeline depth (even)")
    ap.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", "200000")))
    ap.add_argument("--requests-p16", type=int,
                    default=int(os.environ.get("BENCH_REQUESTS_P16", "800000")))
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (make deps)")
    if not os.path.exists(TESSERA):
        sys.exit(f"{TESSERA} not built (cargo build --release)")
    pki_dir = tempfile.mkdtemp(prefix="bench-tls-pki-")
    pki = make_pki(pki_dir)
    rows = [("set", 1, a.requests), ("get", 1, a.requests),
            ("set", 16, a.requests_p16), ("get", 16, a.requests_p16)]
    results = {}
    for test, p, n in rows:
        runs = {"tessera": [], "redis": []}
        blocks = max(1, a.reps // 2)
        for b in range(blocks):
            servers = {k: Server(k, pki) for k in ("tessera", "redis")}
            try:
                order = ["tessera", "redis"] if b % 2 == 0 else ["redis", "tessera"]
                if test == "get":
                    # GET of existing keys: fill the keyspace first.
                    for s in servers.values():
                        bench(s.tls_port, pki["ca.crt"], "set", 16, n)
                for k in order + order[::-1]:
                    runs[k].append(bench(servers[k].tls_port, pki["ca.crt"], test, p, n))
            finally:
                for s in servers.values():
                    s.stop()
        med = {k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v))
               for k, v in runs.items()}
        results[(test, p)] = med
        print(f"{test} -P {p}: tessera {med['tessera'][0]:.0f}/s p99 {med['tessera'][1]:.3f} ms, "
              f"redis {med['redis'][0]:.0f}/s p99 {med['redis'][1]:.3f} ms", file=sys.stderr)
    shutil.rmtree(pki_dir, ignore_errors=True)

    print(f"redis-benchmark --tls -t set|get -r 1000000 -d 64 -c 50; "
          f"-n {a.requests} at -P 1, {a.requests_p16} at -P 16; median of {a.reps} runs per server")
    print()
    print("| test | pipeline | tessera ops/s | redis ops/s | ratio | tessera p99 ms | redis p99 ms | p99 ratio (redis/tessera) |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, p99s = {}, []
    for (test, p), med in results.items():
        (t_ops, t_p99), (r_ops, r_p99) = med["tessera"], med["redis"]
        ratio = t_ops / r_ops if r_ops else 0.0
        p99r = r_p99 / t_p99 if t_p99 else 0.0
        ratios[(test, p)] = ratio
        p99s.append(p99r)
        print(f"| {test.upper()} | {p} | {t_ops:.0f} | {r_ops:.0f} | {ratio:.2f} | "
              f"{t_p99:.3f} | {r_p99:.3f} | {p99r:.2f} |")
    print()
    print(f"RESULT set_ratio={ratios[('set', 1)]:.2f} get_ratio={ratios[('get', 1)]:.2f} "
          f"set_p16_ratio={ratios[('set', 16)]:.2f} get_p16_ratio={ratios[('get', 16)]:.2f} "
          f"p99_ratio={min(p99s):.2f}")


if __name__ == "__main__":
    main()
