"""Celery with its Redis broker for scripts/bench_peers.py.

Worker: `celery -A peer_celery worker --pool solo --prefetch-multiplier 64 --without-gossip
--without-mingle --without-heartbeat`: one process that runs tasks itself, a high prefetch for many
short tasks, and no worker-to-worker chatter (Celery's optimizing guide); results are ignored. Recovery:
by default a task is acked when it starts, so a task whose worker died is lost. Tuned: `acks_late` +
`task_reject_on_worker_lost`, broker `visibility_timeout` 2 s, and kombu's unacked restore sweep every
1 s (`unacked_restore_interval` 1, `unacked_restore_throttle` 1).
"""

from __future__ import annotations

import jobs
from celery import Celery, group

ASYNC = False
DISTS = ("celery", "kombu", "redis", "hiredis")
THROUGHPUT = ("`--pool solo --prefetch-multiplier 64 --without-gossip --without-mingle --without-heartbeat`, "
              "results ignored")
RECOVERY = {"default": "early ack (acks_late off)",
            "tuned": "acks_late, reject_on_worker_lost, visibility_timeout 2 s, restore sweep 1 s"}
BULK = "celery.group(...).apply_async() (sends one by one)"

app = Celery("bench", broker=jobs.redis_url())
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
if jobs.tuned():
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, broker_transport_options={
        "visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1})


@app.task(name="job")
def job(tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    jobs.run_sync(tag, seconds)


def worker_argv(python: str) -> list[str]:
    """One worker process."""
    prefetch = "4" if jobs.concurrency(0) else "64"  # the drill (concurrency 1): Celery's default
    return [python, "-m", "celery", "-A", "peer_celery", "worker", "--pool", "solo", "--prefetch-multiplier",
            prefetch, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]


async def start() -> None:
    """Nothing to connect: the producer pool connects on first use."""


async def stop() -> None:
    """Nothing to close."""


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job (blocking: Celery's client is synchronous)."""
    job.delay(tag, seconds)


async def enqueue_bulk(tags: list[str], seconds: float = 0.0) -> None:
    """Enqueue many with Celery's group."""
    group(job.s(tag, seconds) for tag in tags).apply_async()
