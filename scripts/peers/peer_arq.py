"""arq for scripts/bench_peers.py.

Worker: `arq.run_worker(WorkerSettings)` with logging at WARNING, max_jobs 10 (default; at 50, as swarm's
agents run, it was not clearly faster) and poll_delay
0.01 s: arq polls its queue, and with the default 0.5 s one worker runs at most ~200 jobs/s (100 read per
poll) and idle pickup takes ~450 ms; 0.01 s gives ~2,000 jobs/s for 100 polls/s per idle worker.
A job stays in the queue's sorted set until it is done; a worker takes it by setting an in-progress key
that expires after the job timeout + 10 s, so a job whose worker died runs again once that key is gone.
Defaults: job_timeout 300 s (so 310 s); tuned: job_timeout 2 s (so 12 s: arq adds a fixed 10 s).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jobs
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

ASYNC = True
DISTS = ("arq", "redis", "hiredis")
THROUGHPUT = "`max_jobs=10` (default), `poll_delay=0.01` (default 0.5), logging at WARNING"

RECOVERY = {"default": "job_timeout 300 s (in-progress key 310 s)",
            "tuned": "job_timeout 2 s (in-progress key 12 s)"}
BULK = "asyncio.gather, 64 in flight (no batch API)"

REDIS = RedisSettings.from_dsn(jobs.redis_url())


async def job(ctx: Any, tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    await jobs.run_async(tag, seconds)


class WorkerSettings:
    """What `arq peer_arq.WorkerSettings` runs."""

    functions: ClassVar[list[Any]] = [job]
    redis_settings = REDIS
    max_jobs = jobs.concurrency(10)
    job_timeout = 2 if jobs.tuned() else 300
    poll_delay = 0.01  # the default 0.5 s caps a worker at ~200 jobs/s and pickup at ~450 ms


def worker_argv(python: str) -> list[str]:
    """One worker process."""
    # arq's CLI logs two INFO lines per job; the benchmark runs the same worker with logging at WARNING.
    return [python, "-c", "import logging; logging.basicConfig(level=logging.WARNING); import arq, peer_arq; "
            "arq.run_worker(peer_arq.WorkerSettings)"]


_pool: list[ArqRedis] = []


async def start() -> None:
    """Connect the enqueueing side."""
    _pool.append(await create_pool(REDIS))


async def stop() -> None:
    """Disconnect."""
    await _pool.pop().aclose()


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job."""
    await _pool[0].enqueue_job("job", tag, seconds)
