"""Celery on one Tessera shard, driven by tests/apps.rs.

Usage: TESSERA_CELERY_URL=redis://... python run.py <tasks> <concurrency>

Publishes <tasks> tasks, runs one Celery worker (thread pool) until every
task ran, stops it, and checks that each ran exactly once and the broker's
queue and unacked set are empty. Prints a JSON summary on its last line;
exits 0 only when nothing was lost or run twice.
"""

import json
import os
import signal
import subprocess
import sys
import time

import tasks

DEADLINE_S = float(os.environ.get("TESSERA_APP_DEADLINE_S", "240"))


def main():
    n, concurrency = int(sys.argv[1]), int(sys.argv[2])
    store = tasks._store
    started = time.time()
    for i in range(n):
        tasks.double.apply_async((i,), task_id=f"t-{i}")
    published = time.time()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "threads",
         "-c", str(concurrency), "-Q", "apps", "-l", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
    )
    while time.time() - started < DEADLINE_S and store.hlen(tasks.RUNS) < n:
        time.sleep(0.1)
    time.sleep(1)  # a moment for a duplicate run to show itself
    worker.send_signal(signal.SIGTERM)  # warm shutdown: finish, ack, leave
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    runs = {k.decode(): int(v) for k, v in store.hgetall(tasks.RUNS).items()}
    lost = [f"t-{i}" for i in range(n) if f"t-{i}" not in runs]
    twice = sorted(k for k, v in runs.items() if v > 1)
    summary = {
        "expected": n,
        "ran": len(runs),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "twice": len(twice),
        "left_in_queue": store.llen(tasks.PREFIX + "apps"),
        "unacked": store.hlen(tasks.PREFIX + "unacked"),
        "publish_ms": int((published - started) * 1000),
        "ms": int((time.time() - started) * 1000),
        "worker_exit": worker.returncode,
    }
    print(json.dumps(summary))
    ok = (not lost and not twice and len(runs) == n
          and summary["left_in_queue"] == 0 and summary["unacked"] == 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
