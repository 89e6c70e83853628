"""The one job every system in `scripts/bench_peers.py` runs, for swarm and for each peer alike.

This module runs in swarm's virtualenv (the swarm handler) and in each peer's (their task modules), so
it needs nothing but redis-py. A job is named by a tag:
- `noop` (or `noop <anything>`): the throughput job. It does nothing but say it ran, in one round trip
  (a non-transactional pipeline of INCR on the done counter and SET of the time it started), plus one
  more SET of the first start time for the very first job. The benchmark reads the counter to know the drain is
  over and the two times for the rate: every system pays the same round trip.
- `stamp:<id>`: the pickup job. Reads the clock first thing, then RPUSHes `<id> <ns> <pid>`.
- `work:<id>`: the recovery-drill job. Stamps like `stamp`, sleeps `seconds`, then counts its
  completion in a hash (HINCRBY): a job counted twice ran to its end twice (a duplicate), a job
  never counted was lost.
Every key starts with `bench:`; the benchmark flushes the server between phases.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

import redis
import redis.asyncio

DONE = "bench:done"
FIRST = "bench:first"
LAST = "bench:last"
STAMPS = "bench:stamps"
FINISHED = "bench:finished"


def redis_url() -> str:
    """The server every system shares (set by bench_peers.py in every process it starts)."""
    return os.environ["BENCH_REDIS_URL"]


def tuned() -> bool:
    """True when the peer should use its documented settings for fast recovery from a dead worker."""
    return os.environ.get("BENCH_TUNED", "0") == "1"


ASYNC_CONCURRENCY = 50
"""Jobs at once per swarm agent process. SAQ and arq keep their default, 10: at 50 neither was clearly
faster (two full runs, at 50 and at 10, within this box's run-to-run noise); taskiq's default is 100.
Thread- and process-based workers keep their defaults."""


def concurrency(default: int) -> int:
    """Jobs one worker process runs at once: BENCH_CONCURRENCY when set (the drill sets 1), else `default`."""
    value = os.environ.get("BENCH_CONCURRENCY", "")
    return int(value) if value else default


@functools.cache
def sync_client() -> Any:
    """This process's blocking client for the jobs' own writes (made on first use, in the worker)."""
    return redis.Redis.from_url(redis_url())


_ASYNC: dict[int, Any] = {}


def async_client() -> Any:
    """This event loop's asyncio client (a client is bound to the loop it first ran on)."""
    loop = id(asyncio.get_running_loop())
    if loop not in _ASYNC:
        _ASYNC[loop] = redis.asyncio.Redis.from_url(redis_url())
    return _ASYNC[loop]


def run_sync(tag: str, seconds: float) -> None:
    """Run the job `tag` in a thread or process that may block."""
    now = time.time_ns()
    client = sync_client()
    if tag.startswith("noop"):
        count, _ = client.pipeline(transaction=False).incr(DONE).set(LAST, now).execute()
        if count == 1:
            client.set(FIRST, now)
        return
    kind, _, job = tag.partition(":")
    client.rpush(STAMPS, f"{job} {now} {os.getpid()}")
    if kind == "work":
        time.sleep(seconds)
        client.hincrby(FINISHED, job, 1)


async def run_async(tag: str, seconds: float) -> None:
    """Run the job `tag` on an event loop."""
    now = time.time_ns()
    client = async_client()
    if tag.startswith("noop"):
        count, _ = await client.pipeline(transaction=False).incr(DONE).set(LAST, now).execute()
        if count == 1:
            await client.set(FIRST, now)
        return
    kind, _, job = tag.partition(":")
    await client.rpush(STAMPS, f"{job} {now} {os.getpid()}")
    if kind == "work":
        await asyncio.sleep(seconds)
        await client.hincrby(FINISHED, job, 1)
