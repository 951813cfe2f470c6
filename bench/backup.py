#!/usr/bin/env python3
"""Backup/restore throughput vs a raw copy of the same bytes (same disk).

1. A release `tessera node` is loaded with ~1 GB (1M keys x 1000-byte values
   by default) through `redis-cli --pipe`.
   The node snapshots on its own as the log grows (default
   --snapshot-log-bytes), as a production node does.
2. backup: `tessera backup run` (defaults: a fresh snapshot; the node's own
   snapshots taken during loading are not reused unless asked) to a fresh
   directory target (a PVC stand-in): that snapshot streamed over the admin
   port plus the log after it (the log before a first backup's snapshot
   serves no restore and is not copied), SHA-256 of every byte, then `sync`.
   Which snapshot the backup used is printed (stderr) and in RESULT
   (`snapshot_reused`).
   raw:    `cp` of the files that backup wrote to another directory on the
   same disk, then `sync`.
3. restore: `tessera backup restore` into an empty data directory (download,
   SHA-256 check, fsync, cut at the target time) vs `cp` of the backup's files
   + `sync`.
Each step runs --reps times (default 3), backups and raw copies interleaved;
before each timed step the disk settles (`sync`, then no discard for 0.5 s:
files removed before — by the bench, or a replaced snapshot the node frees in
slices — are discarded, on a disk mounted with `discard`, before the clock
starts); the disk's discard time during each step is printed;
throughput = bytes / wall time, medians reported. The last line is
`RESULT key=value ...`.
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
# Seconds of each timed step spent in the final `sync` (writeback).
SYNC_S = {}
# Milliseconds the disk spent discarding during each timed step.
DISCARD_MS = {}
DISK = None


def disk_of(path):
    """The /proc/diskstats name of the block device holding `path`."""
    st = os.stat(path)
    try:
        name = os.path.basename(os.path.realpath(
            f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"))
    except OSError:
        return None
    return name


def discard_ms():
    if DISK is None:
        return 0
    with open("/proc/diskstats") as f:
        for line in f:
            v = line.split()
            if v[2] == DISK and len(v) >= 18:
                return int(v[17])
    return 0


def settle():
    """Before a timed step: files the previous one removed are freed and, on
    a disk mounted with `discard`, discarded now, not inside the next step's
    timing. `sync` commits the journal, which issues the discards; a node
    frees a replaced snapshot in paced slices for a few seconds, so wait
    until the disk has discarded nothing for 0.5 s (at most 30 s)."""
    subprocess.run(["sync"], check=True)
    last, quiet_since, end = discard_ms(), time.time(), time.time() + 30
    while time.time() < end and time.time() - quiet_since < 0.5:
        time.sleep(0.1)
        subprocess.run(["sync"], check=True)
        now = discard_ms()
        if now != last:
            last, quiet_since = now, time.time()


def timed(fn, name, pids=()):
    settle()
    d0 = discard_ms()
    b0, o0 = busy_cpu_s(), own_cpu_s(pids)
    t = time.time()
    fn()
    t_sync = time.time()
    subprocess.run(["sync"], check=True)
    took = time.time() - t
    SYNC_S.setdefault(name, []).append(time.time() - t_sync)
    DISCARD_MS.setdefault(name, []).append(discard_ms() - d0)
    OTHERS[name] = max(0.0, (busy_cpu_s() - b0) - (own_cpu_s(pids) - o0))
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3, help="runs of each step (medians reported)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-bench-backup-", dir=os.environ.get("BENCH_DIR"))
    global DISK
    DISK = disk_of(work)
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

        out = {}

        def run_backup(target):
            r = subprocess.run([BIN, "backup", "run", "--target", target, "--cluster", "bench",
                                "--nodes", f"127.0.0.1:{admin}"], check=True, capture_output=True)
            out.clear()
            out.update(json.loads(r.stdout))

        def data_files(root):
            """The snapshot and log files under a backup target or data dir."""
            found = []
            for d, _, fs in os.walk(root):
                found += [os.path.join(d, f) for f in fs if f.endswith((".tsnap", ".wal"))]
            return sorted(found)

        def raw_copy(files, name):
            dst = os.path.join(work, "raw")
            os.makedirs(dst)
            took = timed(lambda: [shutil.copy(p, os.path.join(dst, str(i)))
                                  for i, p in enumerate(files)], name, [node.pid] if node else [])
            shutil.rmtree(dst)
            return took

        # Each backup goes to a fresh target, so every run does the same
        # work (a first backup: a fresh snapshot and the log after it); each
        # is followed by a raw copy of the very files it wrote.
        backups, raws = [], []
        target = os.path.join(work, "target0")
        for i in range(a.reps):
            t_i = os.path.join(work, f"target{i}")
            backups.append((timed(lambda: run_backup(t_i), "backup", [node.pid]), out["bytes"]))
            if i == 0:
                first = dict(out)
            files = data_files(t_i)
            raws.append((raw_copy(files, "raw"), du(files)))
            if i > 0:
                shutil.rmtree(t_i)
        with open(os.path.join(target, "bench", "backups", first["id"], "manifest.json")) as f:
            m = json.load(f)["shards"][0]
        used = m["snapshot"]
        after = status(admin).get("lastSnapshot")
        reused = (os.path.basename(used["key"]) == os.path.basename(newest["path"])
                  and used["startLsn"] == newest["startLsn"] and used["endLsn"] == newest["endLsn"]
                  # ageSeconds changes: compare what names the file.
                  and all(after.get(k) == newest.get(k)
                          for k in ("path", "startLsn", "endLsn", "finishedAtMs")))
        how = "the node's newest, reused (no new snapshot)" if reused else "a fresh one"
        print(f"backup used snapshot {os.path.basename(used['key'])} "
              f"LSN {used['startLsn']}..{used['endLsn']}: {how}; log segments copied: "
              f"{len(m['segments'])} ({sum(s['file']['bytes'] for s in m['segments']) / 1e6:.0f} MB); "
              f"the node's log on disk: {du([os.path.join(data, 'wal')]) / 1e6:.0f} MB", file=sys.stderr)
        node.terminate()
        node.wait()
        node = None

        restores, raw_restores = [], []
        for i in range(a.reps):
            restore_dir = os.path.join(work, "restored")
            restores.append((timed(lambda: subprocess.run(
                [BIN, "backup", "restore", "--target", target, "--cluster", "bench",
                 "--data-dir", restore_dir], check=True, capture_output=True), "restore"),
                du([os.path.join(restore_dir, "snapshots"), os.path.join(restore_dir, "wal")])))
            # The same bytes the restore wrote (snapshot + the log after it).
            files = data_files(restore_dir)
            raw_restores.append((raw_copy(files, "raw_restore"), du(files)))
            shutil.rmtree(restore_dir)

        mb = 1024 * 1024

        def mbps(runs):
            return [b / mb / s for s, b in runs]

        def median(xs):
            return sorted(xs)[len(xs) // 2]

        rows = [
            ("backup run (fresh snapshot + log after it, SHA-256)", backups),
            ("raw copy of the same files", raws),
            ("restore (download, SHA-256, fsync)", restores),
            ("raw copy of the restored files", raw_restores),
        ]
        print(f"| operation | MB | seconds (median of {a.reps}) | MB/s (median) | MB/s (each run) |")
        print("|---|---:|---:|---:|---|")
        for name, runs in rows:
            print(f"| {name} | {runs[0][1] / mb:.0f} | {median([s for s, _ in runs]):.2f} | "
                  f"{median(mbps(runs)):.0f} | {' '.join(f'{x:.0f}' for x in mbps(runs))} |")
        bk, rc = median(mbps(backups)), median(mbps(raws))
        rs, rr = median(mbps(restores)), median(mbps(raw_restores))
        # Each run's ratio against the raw copy right after it, too.
        per_run = " ".join(f"{x / y:.2f}" for x, y in zip(mbps(backups), mbps(raws)))
        print(f"backup/raw per run: {per_run}; restore/raw per run: " +
              " ".join(f"{x / y:.2f}" for x, y in zip(mbps(restores), mbps(raw_restores))),
              file=sys.stderr)
        print("seconds in the final sync of each run: " + " ".join(
            f"{k}=" + ",".join(f"{x:.2f}" for x in v) for k, v in SYNC_S.items()), file=sys.stderr)
        print("ms the disk spent discarding during each run: " + " ".join(
            f"{k}=" + ",".join(str(x) for x in v) for k, v in DISCARD_MS.items()), file=sys.stderr)
        print("CPU seconds used by other processes during the last run of each step: " +
              " ".join(f"{k}={v:.2f}" for k, v in OTHERS.items()), file=sys.stderr)
        print(f"RESULT dataset_mb={backups[0][1] / mb:.0f} backup_mbps={bk:.0f} raw_copy_mbps={rc:.0f} "
              f"backup_ratio={bk / rc:.2f} restore_mbps={rs:.0f} raw_restore_mbps={rr:.0f} "
              f"restore_ratio={rs / rr:.2f} snapshot_reused={int(reused)}")
    finally:
        if node:
            node.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
