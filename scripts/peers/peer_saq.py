"""SAQ (Redis queue) for scripts/bench_peers.py: the task, the worker settings and the enqueue side.

Worker: `python -m saq peer_saq.settings --workers 1 --quiet`, concurrency 10 (SAQ's default and its
README's one throughput knob; at 50, as swarm's agents run, it was not clearly faster).
Recovery: a job whose worker died stays `active` until a sweep finds it `stuck` (older than the job's
`timeout`); the sweep runs every `timers["sweep"]` s and re-queues the job only if `retries` allows
another attempt. Defaults: timeout 10 s, sweep 60 s, retries 1 (so a swept job is aborted, not re-run).
Tuned: timeout 2 s, sweep 1 s, retries 3.
"""

from __future__ import annotations

from typing import Any

import jobs
from saq import Queue

ASYNC = True
DISTS = ("saq", "redis", "hiredis")
THROUGHPUT = "`Worker(concurrency=10)` (default), one `--workers 1` process each"
RECOVERY = {"default": "job timeout 10 s, sweep every 60 s, retries 1",
            "tuned": "job timeout 2 s, sweep every 1 s, retries 3"}
BULK = "asyncio.gather, 64 in flight (no batch API)"

queue = Queue.from_url(jobs.redis_url(), name="bench")
JOB_OPTIONS: dict[str, Any] = {"timeout": 2, "retries": 3} if jobs.tuned() else {}


async def job(ctx: Any, *, tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    await jobs.run_async(tag, seconds)


settings = {
    "queue": queue,
    "functions": [job],
    "concurrency": jobs.concurrency(10),
    "timers": {"sweep": 1} if jobs.tuned() else {},
}


def worker_argv(python: str) -> list[str]:
    """One worker process."""
    return [python, "-m", "saq", "peer_saq.settings", "--workers", "1", "--quiet"]


async def start() -> None:
    """Connect the enqueueing side."""
    await queue.connect()


async def stop() -> None:
    """Disconnect."""
    await queue.disconnect()


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job."""
    await queue.enqueue("job", tag=tag, seconds=seconds, **JOB_OPTIONS)
