"""The Celery app of tests/apps.rs: the Redis broker with every key under
the hash tag {celery} (kombu's global_keyprefix), so that the broker's
transactions stay in one slot as a cluster requires."""

import os

from celery import Celery
from redis import Redis

URL = os.environ["TESSERA_CELERY_URL"]
PREFIX = "{celery}"
RUNS = PREFIX + "runs"

app = Celery("apps", broker=URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    task_ignore_result=True,
    task_default_queue="apps",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_store = Redis.from_url(URL)


@app.task(name="double")
def double(i):
    # Each run is counted in the store: a task run twice shows as 2.
    _store.hincrby(RUNS, f"t-{i}", 1)
    return 2 * i
