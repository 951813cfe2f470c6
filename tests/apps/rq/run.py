"""RQ on one Tessera shard, driven by tests/apps.rs.

Usage: python run.py <redis-url> <jobs> <workers>

RQ has no Redis Cluster support (its pipelines span keys of many slots), so
the test gives it a one-shard cluster. Enqueues <jobs> jobs, runs <workers>
burst workers in parallel processes until the queue is empty, then checks
that every job finished exactly once with its result. Prints a JSON summary
on its last line; exits 0 only when nothing was lost or run twice.
"""

import json
import multiprocessing
import sys
import time

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

import tasks


def work(url):
    conn = Redis.from_url(url)
    SimpleWorker([Queue("apps", connection=conn)], connection=conn).work(
        burst=True, logging_level="WARNING"
    )


def main():
    url, jobs, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conn = Redis.from_url(url)
    q = Queue("apps", connection=conn)
    started = time.time()
    ids = []
    batch = 500
    for start in range(0, jobs, batch):
        datas = [
            Queue.prepare_data(tasks.double, args=(i,), job_id=f"job-{i}")
            for i in range(start, min(jobs, start + batch))
        ]
        ids += [j.id for j in q.enqueue_many(datas)]
    procs = [multiprocessing.Process(target=work, args=(url,)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    finished, wrong, lost = 0, [], []
    fetched = Job.fetch_many(ids, connection=conn)
    for i, job in enumerate(fetched):
        if job is None or job.get_status() != JobStatus.FINISHED:
            lost.append(f"job-{i}")
            continue
        finished += 1
        if job.return_value() != 2 * i:
            wrong.append(f"job-{i}")
    runs = {k.decode(): int(v) for k, v in conn.hgetall(tasks.RUNS).items()}
    twice = sorted(k for k, v in runs.items() if v > 1)
    summary = {
        "expected": jobs,
        "finished": finished,
        "lost": len(lost),
        "lost_ids": lost[:10],
        "wrong_result": len(wrong),
        "ran": len(runs),
        "twice": len(twice),
        "failed_registry": q.failed_job_registry.count,
        "left_in_queue": q.count,
        "workers": workers,
        "ms": int((time.time() - started) * 1000),
    }
    print(json.dumps(summary))
    ok = (
        finished == jobs
        and not lost
        and not wrong
        and len(runs) == jobs
        and not twice
        and summary["failed_registry"] == 0
        and summary["left_in_queue"] == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
