"""The job RQ runs: counts its own runs in the store, returns 2 * i."""

from rq import get_current_job

RUNS = "apps:runs"


def double(i):
    job = get_current_job()
    job.connection.hincrby(RUNS, f"job-{i}", 1)
    return 2 * i
