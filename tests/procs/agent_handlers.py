"""Handlers the agent tests run in real `swarm agent run` processes."""

from __future__ import annotations

import os
from typing import Any

import anyio
from redis.asyncio import Redis


async def _note(event: str, task: Any) -> None:
    """Record `event task-id pid` in a Redis list the test reads (the test's own server)."""
    client = Redis.from_url(os.environ["SWARM_REDIS_URL"])
    try:
        await client.rpush("test:log", f"{event} {task.id} {os.getpid()}")
    finally:
        await client.aclose()


async def slow(task: Any, ctx: Any) -> str:
    """Start, then take SWARM_TEST_SLEEP seconds."""
    await _note("start", task)
    await anyio.sleep(float(os.environ.get("SWARM_TEST_SLEEP", "30")))
    await _note("end", task)
    return f"slow done by {os.getpid()}"


async def noop(task: Any, ctx: Any) -> str:
    """Finish at once."""
    await _note("start", task)
    return "noop"


async def boom(task: Any, ctx: Any) -> str:
    """Always raise."""
    raise ValueError(f"cannot handle {task.title}")


def not_async(task: Any, ctx: Any) -> str:
    """A sync function: loading it must fail with a clear error."""
    return "sync"
