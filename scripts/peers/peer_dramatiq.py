"""Dramatiq with its Redis broker for scripts/bench_peers.py.

Worker: `dramatiq peer_dramatiq --processes 1 --threads 8` (8 threads is Dramatiq's default; one
process because the benchmark counts worker processes itself). Recovery: each worker heartbeats; a
worker whose heartbeat is older than `heartbeat_timeout` ms has its unacked messages re-queued by
"maintenance", which a broker command runs with probability `maintenance_chance` per million.
Defaults: 60000 ms and 1000 (0.1 %); tuned: 2000 ms and 100000 (10 %).
"""

from __future__ import annotations

import dramatiq
import jobs
from dramatiq.brokers.redis import RedisBroker

ASYNC = False
DISTS = ("dramatiq", "redis", "hiredis")
THROUGHPUT = "`--threads 8` (default), `--processes 1` per process"
RECOVERY = {"default": "heartbeat_timeout 60000 ms, maintenance_chance 1000/1e6",
            "tuned": "heartbeat_timeout 2000 ms, maintenance_chance 100000/1e6"}
BULK = "dramatiq.group(...).run() (sends one by one)"

broker = RedisBroker(url=jobs.redis_url(), namespace="bench-dramatiq",
                     **({"heartbeat_timeout": 2000, "maintenance_chance": 100_000} if jobs.tuned() else {}))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", actor_name="job")
def job(tag: str, seconds: float) -> None:
    """The benchmark job (see jobs.py)."""
    jobs.run_sync(tag, seconds)


def worker_argv(python: str) -> list[str]:
    """One worker process (Dramatiq's own supervisor forks it)."""
    return [python, "-m", "dramatiq", "peer_dramatiq", "--processes", "1", "--threads", str(jobs.concurrency(8))]


async def start() -> None:
    """Nothing to connect: the broker connects on first use."""


async def stop() -> None:
    """Close the broker."""
    broker.close()


async def enqueue(tag: str, seconds: float = 0.0) -> None:
    """Enqueue one job (blocking: Dramatiq is synchronous)."""
    job.send(tag, seconds)


async def enqueue_bulk(tags: list[str], seconds: float = 0.0) -> None:
    """Enqueue many with Dramatiq's group."""
    dramatiq.group(job.message(tag, seconds) for tag in tags).run()
