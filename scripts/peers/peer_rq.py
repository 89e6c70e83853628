"""RQ for scripts/bench_peers.py.

Worker: `rq worker bench --worker-class rq.worker.SimpleWorker` (runs jobs in the worker process; RQ's
default worker forks a child per job, about ten times slower for tiny jobs); results kept 0 s.
Recovery: a job whose worker died stays in the StartedJobRegistry until its heartbeat entry expires
(at least `job_monitoring_interval` + 60 s, hard-coded), and a worker's maintenance (every
`--maintenance-interval` s, default 600) then fails it, or re-queues it when it has retries left.
Tuned: `--maintenance-interval 1 --job-monitoring-interval 1` and `Retry(max=3)` on every job.
"""

from __future__ import annotations

import jobs
from redis import Redis
from rq import Queue, Retry

ASYNC = False
DISTS = ("rq", "redis", "hiredis")
THROUGHPUT = "`--worker-class rq.worker.SimpleWorker` (no fork per job), `result_ttl=0`"
RECOVERY = {"default": "maintenance every 600 s, no retry",
            "tuned": "maintenance 1 s, job monitoring 1 s, Retry(max=3) (heartbeat TTL floor: +60 s)"}
BULK = "Queue.enqueue_many (one pipeline)"

queue = Queue("bench", connection=Redis.from_url(jobs.redis_url()))
OPTIONS = {"result_ttl": 0, **({"retry": Retry(max=3)} if jobs.tuned() else {})}


def job(tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    jobs.run_sync(tag, seconds)


def worker_argv(python: str) -> list[str]:
    """One worker process."""
    tuning = ["--maintenance-interval", "1", "--job-monitoring-interval", "1"] if jobs.tuned() else []
    return [python, "-m", "rq.cli", "worker", "bench", "--url", jobs.redis_url(), "--worker-class",
            "rq.worker.SimpleWorker", "--quiet", *tuning]


async def start() -> None:
    """Nothing to connect."""


async def stop() -> None:
    """Nothing to close."""


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job (blocking: RQ is synchronous)."""
    queue.enqueue(job, tag, seconds, **OPTIONS)


async def enqueue_bulk(tags: list[str], seconds: float = 0.0) -> None:
    """Enqueue many in one pipeline."""
    queue.enqueue_many([Queue.prepare_data(job, (tag, seconds), **OPTIONS) for tag in tags])
