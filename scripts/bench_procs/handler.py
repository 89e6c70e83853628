"""The handler `scripts/bench_board.py` runs in real `swarm agent run` processes.

One function, told what to do by the task's title, so one agent process serves every phase:
- `noop ...`  return at once (the lifecycle throughput runs: nothing but swarm's own work is timed);
- `stamp ...` record `<task id> <time.time_ns()> <pid>` on a Redis list first thing, then return
  (idle pickup: the benchmark compares the stamp with the time it called create);
- `hold ...`  stamp, then sleep for the number of seconds in the body (the SIGKILL recovery drill).
The stamp is written with the agent's own Redis client, after the clock is read, so the RPUSH
round trip is not part of the measured pickup time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from swarm.keys import Keys

STAMPS = "bench:stamps"
"""The list, under the swarm's key prefix, that stamps go to."""


def stamps_key(swarm: str) -> str:
    """The stamp list of the swarm called `swarm` (the benchmark deletes it with the swarm's keys)."""
    return Keys(swarm).prefix + STAMPS


async def handle(task: Any, ctx: Any) -> str:
    """Do what the title says (see the module doc)."""
    if task.title.startswith("noop"):
        return ""
    started = time.time_ns()
    await ctx.bus.redis.rpush(stamps_key(ctx.settings.name), f"{task.id} {started} {os.getpid()}")
    if task.title.startswith("hold"):
        await anyio.sleep(float(task.body or "60"))
    return ""
