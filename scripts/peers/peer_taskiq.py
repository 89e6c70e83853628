"""taskiq with taskiq-redis's stream broker for scripts/bench_peers.py.

Worker: `taskiq worker peer_taskiq:broker --workers 1 --max-async-tasks 100` (100 is taskiq's default;
`--workers 1` because `taskiq worker` forks 2 processes by default and the benchmark counts processes
itself). The broker reads with XREADGROUP (xread_count 100, its default) and acks after the task.
Recovery: entries a dead consumer left pending are taken over with XAUTOCLAIM once they are idle for
`idle_timeout` ms (default 600000 = 10 min; tuned 2000). Note that taskiq-redis runs XAUTOCLAIM only
after an XREADGROUP that returned new entries, so an otherwise idle queue never recovers them.
"""

from __future__ import annotations

import jobs
from taskiq_redis import RedisStreamBroker

ASYNC = True
DISTS = ("taskiq", "taskiq-redis", "redis", "hiredis")
THROUGHPUT = "`RedisStreamBroker` defaults, `--max-async-tasks 100` (default), `--workers 1` per process"
RECOVERY = {"default": "idle_timeout 600000 ms (XAUTOCLAIM)", "tuned": "idle_timeout 2000 ms"}
BULK = "asyncio.gather, 64 in flight (no batch API)"

broker = RedisStreamBroker(url=jobs.redis_url(), queue_name="bench",
                           **({"idle_timeout": 2000} if jobs.tuned() else {}))


@broker.task(task_name="job")
async def job(tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    await jobs.run_async(tag, seconds)


def worker_argv(python: str) -> list[str]:
    """One worker process."""
    return [python, "-m", "taskiq", "worker", "peer_taskiq:broker", "--workers", "1",
            "--max-async-tasks", str(jobs.concurrency(100)), "--log-level", "WARNING"]


async def start() -> None:
    """Connect the enqueueing side."""
    await broker.startup()


async def stop() -> None:
    """Disconnect."""
    await broker.shutdown()


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job."""
    await job.kiq(tag, seconds)
