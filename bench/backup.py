#!/usr/bin/env python3
"""Backup/restore throughput vs a raw copy of the same bytes (same disk).

1. A release `tessera node` is loaded with ~1 GB (1M keys x 1000-byte values
   by default) through `redis-cli --pipe`.
   The node snapshots on its own as the log grows (default
   --snapshot-log-bytes), as a production node does.
2. backup: `tessera backup run` (defaults: a fresh snapshot; the node's own
   snapshots taken during loading are not reused unless asked) to a directory
   target (a PVC stand-in): that snapshot streamed over the admin port plus
   every log segment, SHA-256 of every byte, then `sync`. Which snapshot the
   backup used is printed (stderr) and in RESULT (`snapshot_reused`).
   raw:    `cp` of the same files (the node's newest snapshot + its log
   segments) to a directory on the same disk, then `sync`.
3. restore: `tessera backup restore` into an empty data directory (download,
   SHA-256 check, fsync, cut at the target time) vs `cp` of the backup's files
   + `sync`.
Throughput = bytes / wall time. The last line is `RESULT key=value ...`.
The binary: $TESSERA_BIN, default target/release/tessera.
"""
import argparse, json, os, resource, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TESSERA_BIN") or os.path.join(ROOT, "target", "release", "tessera")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def status(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/v1/status", timeout=10) as r:
        return json.load(r)


def du(paths):
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for d, _, fs in os.walk(p):
                total += sum(os.path.getsize(os.path.join(d, f)) for f in fs)
        else:
            total += os.path.getsize(p)
    return total


def busy_cpu_s():
    """CPU seconds every process on the machine has used (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(pids):
    """CPU seconds of this script's finished children plus the running ones."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = resource.getrusage(resource.RUSAGE_SELF)
    t = r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            t += (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return t


# CPU seconds other processes used during each timed step: a 2-core machine
# shared with builds makes the parallel SHA-256 of a restore (and the
# backup's node + hashing) slower while the single-stream cp barely notices.
OTHERS = {}


def timed(fn, name, pids=()):
    b0, o0 = busy_cpu_s(), own_cpu_s(pids)
    t = time.time()
    fn()
    subprocess.run(["sync"], check=True)
    took = time.time() - t
    OTHERS[name] = max(0.0, (busy_cpu_s() - b0) - (own_cpu_s(pids) - o0))
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=1000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-bench-backup-", dir=os.environ.get("BENCH_DIR"))
    node = None
    try:
        data = os.path.join(work, "node")
        port, admin = free_port(), free_port()
        node = subprocess.Popen(
            [BIN, "node", "--bind", "127.0.0.1", "--port", str(port), "--admin-port", str(admin),
             "--data-dir", data, "--fsync", "everysec"],
            stderr=subprocess.DEVNULL)
        wait_port(port)
        proto = os.path.join(work, "load.resp")
        val = b"v" * a.value_bytes
        with open(proto, "wb") as f:
            for i in range(a.keys):
                k = b"key:%010d" % i
                f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(val), val))
        t = time.time()
        with open(proto, "rb") as f:
            subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=f, check=True,
                           stdout=subprocess.DEVNULL)
        load_s = time.time() - t
        os.remove(proto)
        print(f"loaded {a.keys} keys x {a.value_bytes} B in {load_s:.1f}s", file=sys.stderr)

        # A snapshot the loading triggered may still be running: wait until
        # the node's newest snapshot stays the same for 5 s.
        newest, since, end = None, time.time(), time.time() + 120
        while time.time() < end:
            cur = status(admin).get("lastSnapshot")
            if cur != newest:
                newest, since = cur, time.time()
            elif time.time() - since >= 5:
                break
            time.sleep(0.5)
        if newest is None:
            sys.exit("the node took no snapshot while loading")
        print(f"node's newest snapshot: {os.path.basename(newest['path'])} "
              f"LSN {newest['startLsn']}..{newest['endLsn']} {newest['bytes'] / 1e6:.0f} MB",
              file=sys.stderr)

        target = os.path.join(work, "target")
        out = {}

        def run_backup():
            r = subprocess.run([BIN, "backup", "run", "--target", target, "--cluster", "bench",
                                "--nodes", f"127.0.0.1:{admin}"], check=True, capture_output=True)
            out.update(json.loads(r.stdout))

        backup_s = timed(run_backup, "backup", [node.pid])
        backup_bytes = out["bytes"]
        with open(os.path.join(target, "bench", "backups", out["id"], "manifest.json")) as f:
            used = json.load(f)["shards"][0]["snapshot"]
        after = status(admin).get("lastSnapshot")
        reused = (os.path.basename(used["key"]) == os.path.basename(newest["path"])
                  and used["startLsn"] == newest["startLsn"] and used["endLsn"] == newest["endLsn"]
                  # ageSeconds changes: compare what names the file.
                  and all(after.get(k) == newest.get(k)
                          for k in ("path", "startLsn", "endLsn", "finishedAtMs")))
        how = "the node's newest, reused (no new snapshot)" if reused else "a fresh one"
        print(f"backup used snapshot {os.path.basename(used['key'])} "
              f"LSN {used['startLsn']}..{used['endLsn']}: {how}", file=sys.stderr)
        # The raw copy: the very files the backup read on the node.
        snaps = sorted(os.listdir(os.path.join(data, "snapshots")))
        src = [os.path.join(data, "snapshots", snaps[-1])] + [
            os.path.join(data, "wal", f) for f in sorted(os.listdir(os.path.join(data, "wal")))
            if f.endswith(".wal")]
        raw_bytes = du(src)
        raw_dir = os.path.join(work, "raw")
        os.makedirs(raw_dir)
        raw_s = timed(lambda: [shutil.copy(p, raw_dir) for p in src], "raw", [node.pid])
        shutil.rmtree(raw_dir)
        node.terminate()
        node.wait()
        node = None

        restore_dir = os.path.join(work, "restored")

        def run_restore():
            subprocess.run([BIN, "backup", "restore", "--target", target, "--cluster", "bench",
                            "--data-dir", restore_dir], check=True, capture_output=True)

        restore_s = timed(run_restore, "restore")
        restore_bytes = du([os.path.join(restore_dir, "snapshots"), os.path.join(restore_dir, "wal")])
        raw2 = os.path.join(work, "raw2")
        os.makedirs(raw2)
        # The same bytes the restore wrote (snapshot + the log after it).
        files = []
        for sub in ("snapshots", "wal"):
            d = os.path.join(restore_dir, sub)
            files += [os.path.join(d, f) for f in sorted(os.listdir(d))]
        raw_restore_bytes = du(files)
        raw_restore_s = timed(lambda: [shutil.copy(p, raw2) for p in files], "raw_restore")

        mb = 1024 * 1024
        rows = [
            ("backup run (snapshot + log, SHA-256)", backup_bytes, backup_s),
            ("raw copy of the same files", raw_bytes, raw_s),
            ("restore (download, SHA-256, fsync)", restore_bytes, restore_s),
            ("raw copy of the restored files", raw_restore_bytes, raw_restore_s),
        ]
        print("| operation | MB | seconds | MB/s |")
        print("|---|---:|---:|---:|")
        for name, b, s in rows:
            print(f"| {name} | {b / mb:.0f} | {s:.2f} | {b / mb / s:.0f} |")
        bk = backup_bytes / mb / backup_s
        rc = raw_bytes / mb / raw_s
        rs = restore_bytes / mb / restore_s
        rr = raw_restore_bytes / mb / raw_restore_s
        print("CPU seconds used by other processes during each step: " +
              " ".join(f"{k}={v:.2f}" for k, v in OTHERS.items()), file=sys.stderr)
        print(f"RESULT dataset_mb={backup_bytes / mb:.0f} backup_mbps={bk:.0f} raw_copy_mbps={rc:.0f} "
              f"backup_ratio={bk / rc:.2f} restore_mbps={rs:.0f} raw_restore_mbps={rr:.0f} "
              f"restore_ratio={rs / rr:.2f} snapshot_reused={int(reused)}")
    finally:
        if node:
            node.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
