#!/usr/bin/env python3
"""Online slot migration vs Redis's legacy resharding, on the same data.

1. The same data set (BENCH_MIGRATION_MB, default 1024 MB: keys `k:<n>` with
   1000-byte values) is loaded with `redis-cli --pipe` into
   - one release `tessera node` (A) that owns every slot, next to an empty
     one (B) that owns none;
   - one `redis-server --cluster-enabled yes` (A) holding every slot, next
     to an empty one (B) that has met it (AOF everysec, as Tessera's log).
2. idle: slots 0-8191 (half the data) move A -> B with nothing else running.
   Tessera: `POST /v1/migrations` on A, the topology that flips the slots
   pushed to B then A once A reports handoff-ready, until A reports done.
   Redis: `redis-cli --cluster reshard --cluster-slots 8192
   --cluster-pipeline 100` (the legacy MIGRATE loop).
3. loaded: the same 8192 slots move back B -> A while `redis-benchmark
   --cluster -t set -d 100 -r 1000000 -c 16` writes to all slots, and a
   probe client (this script) writes unique keys one at a time, following
   MOVED/ASK: its latencies for 3 s before the move are the baseline, those
   during the move give client_p99_ratio; every key it got +OK for is read
   back afterwards (acked_lost).
Each move starts once neither system runs background persistence (a
Tessera snapshot, a Redis AOF rewrite) that the load or the previous move
started, and after a sync(2) (no writeback of earlier writes meanwhile). Times are wall times of the whole move (Tessera: start to done,
the flip included). moved_mb_s = key+value bytes of the moved half / Tessera's idle
time. write_pause_ms_max is the longest write pause Tessera reported.
The last line is `RESULT key=value ...`. The binary: $TESSERA_BIN, default
target/release/tessera ($CARGO_TARGET_DIR honoured).
"""
import binascii, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
BIN = os.environ.get("TESSERA_BIN") or os.path.join(TARGET, "release", "tessera")
MB = int(os.environ.get("BENCH_MIGRATION_MB", "1024"))
VALUE = 1000
HALF = 8192


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cluster_port():
    """A port for redis-server in cluster mode: at most 55535, with the
    cluster bus port (+10000) free too."""
    for _ in range(200):
        p = free_port()
        if p > 55535:
            continue
        try:
            s = socket.socket()
            s.bind(("127.0.0.1", p + 10000))
            s.close()
            return p
        except OSError:
            continue
    sys.exit("no port for redis-server's cluster bus")


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def slot_of(key: bytes) -> int:
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return binascii.crc_hqx(key, 0) & 16383


class RespError(Exception):
    pass


class Conn:
    """A minimal RESP2 client (enough for SET/GET/ASKING and admin calls)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 5)
        self.s.settimeout(60)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad reply {line!r}")

    def call(self, *args):
        self.s.sendall(self.encode(args))
        return self.read()

    def pipeline(self, cmds):
        self.s.sendall(b"".join(self.encode(c) for c in cmds))
        return [self.read() for _ in cmds]


class Router:
    """Sends keyed commands to the slot's owner, following MOVED and ASK."""

    def __init__(self, ports):
        self.default = ports[0]
        self.owner = {}
        self.conns = {}

    def conn(self, port):
        if port not in self.conns:
            self.conns[port] = Conn(port)
        return self.conns[port]

    def call(self, key: bytes, *args):
        slot = slot_of(key)
        port = self.owner.get(slot, self.default)
        asking = False
        for _ in range(10):
            c = self.conn(port)
            if asking:
                c.call("ASKING")
            r = c.call(*args)
            if isinstance(r, RespError):
                msg = str(r)
                if msg.startswith("MOVED") or msg.startswith("ASK"):
                    port = int(msg.split()[2].rsplit(":", 1)[1])
                    asking = msg.startswith("ASK")
                    if not asking:
                        self.owner[slot] = port
                    continue
                if msg.startswith("TRYAGAIN"):
                    time.sleep(0.01)
                    continue
            return r
        raise RespError("too many redirects")


def http(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def settle(ports, timeout=120):
    """Waits until no server runs background persistence the load started
    (a Tessera snapshot, Redis' AOF rewrite or RDB save) and the page cache
    holds no unwritten data, so a move is not timed against either: checked
    twice, a second and a half apart (a snapshot may follow another)."""
    busy = ("rdb_bgsave_in_progress:1", "aof_rewrite_in_progress:1")
    end = time.time() + timeout
    # Dirty pages of earlier loads (both systems' logs) reach the disk
    # first, so neither move shares the disk with the other's writeback.
    os.sync()
    quiet = 0
    while quiet < 2 and time.time() < end:
        infos = [Conn(p).call("INFO", "persistence") for p in ports]
        infos = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
        quiet = quiet + 1 if not any(b in i for i in infos for b in busy) else 0
        time.sleep(1.5 if quiet else 0.2)


def load_data(port, keys):
    """The data set through `redis-cli --pipe`, generated on the fly."""
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pad = b"x" * VALUE
    buf = []
    try:
        for i in range(keys):
            k = b"k:%d" % i
            v = (b"%d:" % i + pad)[:VALUE]
            buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
            if len(buf) == 10000:
                p.stdin.write(b"".join(buf))
                buf = []
        p.stdin.write(b"".join(buf))
        p.stdin.close()
    except BrokenPipeError:
        pass
    out = p.stdout.read().decode()
    if p.wait() != 0 or "errors: 0" not in out:
        sys.exit(f"loading failed: {out}")


class Probe(threading.Thread):
    """One client writing unique keys one at a time, following redirects;
    keeps every latency (with its time) and every acknowledged key."""

    def __init__(self, ports, tag):
        super().__init__(daemon=True)
        self.router = Router(ports)
        self.tag = tag
        self.stop = False
        self.samples = []  # (start time, latency s)
        self.acked = []
        self.errors = 0

    def run(self):
        i = 0
        while not self.stop:
            i += 1
            k = b"probe:%s:%d" % (self.tag.encode(), i)
            t = time.monotonic()
            try:
                r = self.router.call(k, "SET", k, i)
            except (OSError, ConnectionError, RespError):
                r = None
                self.router.conns.clear()
            self.samples.append((t, time.monotonic() - t))
            if r == "OK":
                self.acked.append((k, i))
            else:
                self.errors += 1

    def p99(self, t0, t1):
        lat = sorted(l for (t, l) in self.samples if t0 <= t < t1)
        return lat[min(len(lat) - 1, len(lat) * 99 // 100)] if lat else float("nan"), len(lat)

    def max_latency(self, t0, t1):
        return max((l for (t, l) in self.samples if t0 <= t < t1), default=0.0)

    def lost(self, ports):
        r = Router(ports)
        lost = 0
        for k, i in self.acked:
            v = r.call(k, "GET", k)
            if v != str(i).encode():
                lost += 1
        return lost


def benchmark_load(port):
    return subprocess.Popen(["redis-benchmark", "--cluster", "-h", "127.0.0.1", "-p", str(port), "-t", "set",
                             "-d", "100", "-r", "1000000", "-c", "16", "-n", "2000000000", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_proc(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class TesseraPair:
    def __init__(self, tmp):
        self.nodes = []
        for i in range(2):
            port, admin = free_port(), free_port()
            nid = "%040x" % (0xb0a000 + i)
            proc = subprocess.Popen([BIN, "node", "--bind", "127.0.0.1", "--port", str(port), "--admin-port", str(admin),
                                     "--data-dir", os.path.join(tmp, f"t{i}"), "--node-id", nid,
                                     "--consistency", "eventual", "--replicas", "0", "--fsync", "everysec"],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"t{i}.log"), "wb"))
            self.nodes.append({"port": port, "admin": admin, "id": nid, "proc": proc})
        for n in self.nodes:
            wait_port(n["port"])
            wait_port(n["admin"])
        self.epoch = 0
        self.owned = [[(0, 16383)], []]
        self.push()

    def addr(self, i):
        n = self.nodes[i]
        return {"id": n["id"], "host": "127.0.0.1", "port": n["port"]}

    def push(self, order=(0, 1)):
        self.epoch += 1
        topo = {"epoch": self.epoch, "shards": [
            {"name": f"s{i}", "slots": [list(r) for r in self.owned[i]], "primary": self.addr(i), "replicas": [], "epoch": 0}
            for i in range(2)]}
        for i in order:
            st, b = http(self.nodes[i]["admin"], "PUT", "/v1/topology", topo)
            if st != 200:
                sys.exit(f"topology push to {i}: {st} {b}")

    def move(self, src, dst, mid):
        """Slots 0-8191 from node src to node dst; returns (seconds, status)."""
        t = time.monotonic()
        st, b = http(self.nodes[src]["admin"], "POST", "/v1/migrations",
                     {"id": mid, "slots": [[0, HALF - 1]], "target": self.addr(dst), "writePauseTimeoutMs": 5000})
        if st != 201:
            sys.exit(f"start: {st} {b}")
        while True:
            _, m = http(self.nodes[src]["admin"], "GET", f"/v1/migrations/{mid}")
            m = m["outgoing"][0]
            if m["phase"] == "handoff-ready":
                break
            if m["phase"] == "aborted":
                sys.exit(f"migration aborted: {m}")
            time.sleep(0.005)
        self.owned[src] = [(HALF, 16383)] if src == 0 else []
        self.owned[dst] = [(0, 16383)] if dst == 0 else [(0, HALF - 1)]
        self.push(order=(dst, src))
        while True:
            _, m = http(self.nodes[src]["admin"], "GET", f"/v1/migrations/{mid}")
            m = m["outgoing"][0]
            if m["phase"] == "done":
                return time.monotonic() - t, m
            if m["phase"] == "aborted":
                sys.exit(f"migration aborted: {m}")
            time.sleep(0.005)

    def ports(self):
        return [n["port"] for n in self.nodes]

    def stop(self):
        for n in self.nodes:
            n["proc"].kill()
            n["proc"].wait()


class RedisPair:
    def __init__(self, tmp):
        self.nodes = []
        for i in range(2):
            port = cluster_port()
            d = os.path.join(tmp, f"r{i}")
            os.makedirs(d)
            proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                     "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                                    stdout=open(os.path.join(tmp, f"r{i}.log"), "wb"), stderr=subprocess.STDOUT)
            self.nodes.append({"port": port, "proc": proc})
        for n in self.nodes:
            wait_port(n["port"])
            n["id"] = Conn(n["port"]).call("CLUSTER", "MYID")
            n["id"] = n["id"].decode() if isinstance(n["id"], bytes) else n["id"]
        a = Conn(self.nodes[0]["port"])
        a.call("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        a.call("CLUSTER", "MEET", "127.0.0.1", self.nodes[1]["port"])
        end = time.time() + 30
        while time.time() < end:
            infos = [Conn(n["port"]).call("CLUSTER", "INFO").decode() for n in self.nodes]
            if all("cluster_state:ok" in i and "cluster_known_nodes:2" in i for i in infos):
                return
            time.sleep(0.1)
        sys.exit("the redis cluster did not form")

    def move(self, src, dst):
        t = time.monotonic()
        r = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{self.nodes[src]['port']}",
                            "--cluster-from", self.nodes[src]["id"], "--cluster-to", self.nodes[dst]["id"],
                            "--cluster-slots", str(HALF), "--cluster-yes", "--cluster-pipeline", "100"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        took = time.monotonic() - t
        if r.returncode != 0:
            sys.exit("reshard failed: " + r.stdout.decode()[-2000:])
        return took

    def ports(self):
        return [n["port"] for n in self.nodes]

    def stop(self):
        for n in self.nodes:
            n["proc"].kill()
            n["proc"].wait()


def loaded_move(ports, tag, move):
    """Runs `move` under the benchmark load and the probe; returns its time
    and the probe's (baseline p99, p99 during, max during, lost, errors)."""
    bench = benchmark_load(ports[0])
    probe = Probe(ports, tag)
    probe.start()
    time.sleep(1)
    t0 = time.monotonic()
    time.sleep(3)
    t1 = time.monotonic()
    took = move()
    t2 = time.monotonic()
    time.sleep(0.5)
    probe.stop = True
    probe.join()
    stop_proc(bench)
    base, nb = probe.p99(t0, t1)
    during, nd = probe.p99(t1, t2)
    lost = probe.lost(ports)
    log(f"  {tag}: probe baseline p99 {base * 1000:.2f} ms ({nb} writes), during {during * 1000:.2f} ms ({nd} writes), "
        f"max {probe.max_latency(t1, t2) * 1000:.1f} ms, {len(probe.acked)} acked, {lost} lost, {probe.errors} failed")
    return took, base, during, probe.max_latency(t1, t2), lost, len(probe.acked)


def main():
    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: make deps")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    keys = MB * 1_000_000 // (VALUE + 10)
    moved_bytes = sum(len(b"k:%d" % i) + VALUE for i in range(keys) if slot_of(b"k:%d" % i) < HALF)
    tmp = tempfile.mkdtemp(prefix="tessera-bench-migration-", dir=os.environ.get("BENCH_DIR"))
    log(f"data set: {keys} keys x {VALUE} B ({MB} MB); moving slots 0-{HALF - 1}: {moved_bytes / 1e6:.0f} MB; dir {tmp}")
    t = r = None
    try:
        t = TesseraPair(tmp)
        r = RedisPair(tmp)
        t0 = time.monotonic()
        load_data(t.nodes[0]["port"], keys)
        log(f"tessera loaded in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        load_data(r.nodes[0]["port"], keys)
        log(f"redis loaded in {time.monotonic() - t0:.1f} s")

        settle(t.ports() + r.ports())
        t_idle, m_idle = t.move(0, 1, "idle")
        log(f"tessera idle: {t_idle:.2f} s, {m_idle['keysSent']} keys, {m_idle['bytesSent']} B sent, pause {m_idle['writePauseMs']} ms")
        settle(t.ports() + r.ports())
        r_idle = r.move(0, 1)
        log(f"redis idle: {r_idle:.2f} s")
        settle(t.ports() + r.ports())

        status = {}

        def tessera_back():
            took, m = t.move(1, 0, "loaded")
            status["m"] = m
            return took
        t_loaded, t_base, t_during, t_max, t_lost, t_acked = loaded_move(t.ports(), "tessera", tessera_back)
        m_loaded = status["m"]
        log(f"tessera loaded: {t_loaded:.2f} s, {m_loaded['keysSent']} keys, pause {m_loaded['writePauseMs']} ms")
        settle(t.ports() + r.ports())
        r_loaded, r_base, r_during, r_max, r_lost, r_acked = loaded_move(r.ports(), "redis", lambda: r.move(1, 0))
        log(f"redis loaded: {r_loaded:.2f} s")
    finally:
        for pair in (t, r):
            if pair:
                pair.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)

    pause = max(m_idle["writePauseMs"], m_loaded["writePauseMs"])
    ratio = t_during / t_base if t_base > 0 else float("nan")
    r_ratio = r_during / r_base if r_base > 0 else float("nan")
    print(f"\n{keys} keys x {VALUE} B ({MB} MB loaded); {HALF} slots ({moved_bytes / 1e6:.0f} MB) moved; "
          f"loaded = redis-benchmark --cluster -t set -d 100 -c 16 + a probe client\n")
    print("| system | idle s | loaded s | MB/s idle | write pause ms (max) | probe p99 baseline ms | probe p99 during ms | p99 ratio | probe max ms | acked | lost |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| tessera migration | {t_idle:.2f} | {t_loaded:.2f} | {moved_bytes / 1e6 / t_idle:.0f} | {pause} | "
          f"{t_base * 1000:.2f} | {t_during * 1000:.2f} | {ratio:.2f} | {t_max * 1000:.1f} | {t_acked} | {t_lost} |")
    print(f"| redis-cli --cluster reshard | {r_idle:.2f} | {r_loaded:.2f} | {moved_bytes / 1e6 / r_idle:.0f} | — | "
          f"{r_base * 1000:.2f} | {r_during * 1000:.2f} | {r_ratio:.2f} | {r_max * 1000:.1f} | {r_acked} | {r_lost} |")
    print()
    print(f"RESULT moved_mb_s={moved_bytes / 1e6 / t_idle:.1f} idle_s={t_idle:.2f} loaded_s={t_loaded:.2f} "
          f"redis_idle_s={r_idle:.2f} redis_loaded_s={r_loaded:.2f} speedup_idle={r_idle / t_idle:.2f} "
          f"speedup_loaded={r_loaded / t_loaded:.2f} write_pause_ms_max={pause} client_p99_ratio={ratio:.2f} "
          f"acked_lost={t_lost}")


if __name__ == "__main__":
    main()
