"""The enqueueing side of one peer, run by scripts/bench_peers.py inside that peer's own virtualenv.

`python drive.py PEER COMMAND [N]`, with BENCH_REDIS_URL (and BENCH_TUNED, BENCH_CONCURRENCY) set;
PEER is a module `peer_<name>.py` beside this file. It prints one line, `BENCH-JSON {...}`, last:
- `describe`: versions of the peer's distributions, its worker command, settings and bulk method;
- `enqueue N` / `bulk N`: enqueue N noop jobs one at a time (each call awaited before the next) or
  with the peer's bulk method (see its BULK), timed from the first call to the last return;
- `pickup N`: one `stamp` job into the idle system N + 1 times, 50 ms apart (the first is warm-up);
  per job, ms from just before the enqueue call to the clock reading that starts the job (same host),
  and the pids that ran them (the recovery drill's warm-up uses these);
- `work N SECONDS`: enqueue the recovery drill's N `work` jobs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from importlib import metadata
from types import ModuleType
from typing import Any

import jobs

IN_FLIGHT = 64
PICKUP_WAIT_S = 5.0


def say(data: dict[str, Any]) -> None:
    """The one line bench_peers.py reads."""
    print("BENCH-JSON " + json.dumps(data), flush=True)


async def bulk(peer: ModuleType, tags: list[str]) -> None:
    """The peer's batch API, or for asyncio clients IN_FLIGHT concurrent enqueues."""
    if hasattr(peer, "enqueue_bulk"):
        await peer.enqueue_bulk(tags)
        return
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(tag: str) -> None:
        async with gate:
            await peer.enqueue(tag)

    await asyncio.gather(*(one(tag) for tag in tags))


async def pickup(peer: ModuleType, count: int) -> dict[str, Any]:
    """Idle pickup samples (ms); a job whose stamp did not come within PICKUP_WAIT_S is counted missed."""
    client = jobs.async_client()
    samples: list[float] = []
    pids: list[int] = []
    missed = 0
    for i in range(count + 1):
        await asyncio.sleep(0.05)  # every worker back to its blocking read or poll
        sent = time.time_ns()
        await peer.enqueue(f"stamp:p{i}")
        got = None
        limit = time.monotonic() + PICKUP_WAIT_S
        while got is None and time.monotonic() < limit:
            reply = await client.blpop([jobs.STAMPS], timeout=1)
            if reply is not None and reply[1].decode().split()[0] == f"p{i}":
                _, ns, pid = reply[1].decode().split()
                got = int(ns)
                pids.append(int(pid))
        if got is None:
            missed += 1
        elif i > 0:
            samples.append((got - sent) / 1e6)
    return {"ms": samples, "missed": missed, "pids": pids}


async def main(name: str, command: str, args: list[str]) -> None:
    """Run one command against the peer `name`."""
    peer = importlib.import_module(f"peer_{name}")
    if command == "describe":
        say({"versions": {d: metadata.version(d) for d in peer.DISTS}, "worker": peer.worker_argv(sys.executable),
             "throughput": peer.THROUGHPUT, "recovery": peer.RECOVERY, "bulk": peer.BULK})
        return
    await peer.start()
    try:
        if command in ("enqueue", "bulk"):
            tags = ["noop"] * int(args[0])
            began = time.perf_counter()
            if command == "bulk":
                await bulk(peer, tags)
            else:
                for tag in tags:
                    await peer.enqueue(tag)
            say({"seconds": time.perf_counter() - began})
        elif command == "pickup":
            say(await pickup(peer, int(args[0])))
        elif command == "work":
            for i in range(int(args[0])):
                await peer.enqueue(f"work:w{i}", float(args[1]))
            say({})
        else:
            raise SystemExit(f"unknown command {command!r}: use describe, enqueue, bulk, pickup or work")
    finally:
        await peer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
