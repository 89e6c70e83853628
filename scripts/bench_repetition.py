"""Repetition-detection benchmark (not a test): how many messages/s the engine classifies and counts.

Run: `.venv/bin/python scripts/bench_repetition.py` (about 10 s; `--help` lists the options). It starts
a throwaway embedded Valkey in a temporary directory and stops it at the end, unless SWARM_REDIS_URL
points at a server to use instead (only keys of the swarm `bench-rep` are touched, and deleted).

1. Classification (pure Python, `Classifier.classify`: normalize, intent lexicons, SimHash and
   signature for other talk), two ways:
   - cold: every text is distinct (ids, numbers, paths and wording vary), through a classifier
     whose cache never hits: the worst case, every message normalized and hashed from scratch;
   - warm: texts as chatter really repeats (a few hundred distinct lines), so the per-text cache hits.
   Target (issue 5): >= 20,000 messages/s classified, cold.
2. Detection through Redis: `Detector.observe_many` (classification + one Lua call per batch) over
   the same cold mix spread across 50 agents, and `Detector.observe` one message at a time (one
   round trip each, the shape of a consumer handler).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from redis.asyncio import Redis

from swarm.connection import open_redis
from swarm.discovery.repetition import Detector, RepetitionSettings
from swarm.discovery.text import Classifier
from swarm.protocol import Message, StatusBody, message
from swarm.server import EmbeddedServer
from swarm.settings import Settings

SWARM_NAME = "bench-rep"
TARGET = 20_000
IDLE = [
    "standing by", "awaiting orders", "idle, no tasks", "ack, ready for next assignment", "waiting for instructions",
    "nothing to do right now", "still here", "status unchanged", "queue empty", "any tasks for me?",
    "Idle since {t}, nothing in my queue", "standing by ({agent})", "no tasks assigned to me", "ready for more",
]
PROGRESS = [
    "committed fix for the lease expiry race ({sha})", "pushed {sha} to main", "merged PR #{n}", "tests pass on {path}",
    "opened PR #{n}: add reclaim loop", "fixed flaky test in {path}", "all green: {n} passed in {n}.{n}s",
    "claimed task {n}", "refactored {path} into two modules", "merged PR #{n}; ready for next assignment",
]
OTHER = [
    "still investigating the flaky timeout in {path} (run {n})", "blocked: waiting for review on PR #{n}",
    "retrying connection to redis://10.0.{n}.{n}:6379 (attempt {n})", "working on task {n} (no ETA)",
    "question: should the lease TTL be {n}s?", "reading the XAUTOCLAIM docs for {path}",
]
PATHS = ["swarm/bus.py", "tests/test_board.py", "swarm/lua/claim.lua", "/srv/swarm/logs/agent.log"]


def texts(count: int, rng: random.Random, distinct: bool) -> list[str]:
    """The benchmark mix: 40% idle, 30% progress, 30% other; `distinct` adds a unique tail to each."""
    out: list[str] = []
    for i in range(count):
        pool = rng.choices((IDLE, PROGRESS, OTHER), weights=(4, 3, 3))[0]
        text = rng.choice(pool).format(
            t=f"{rng.randrange(24):02d}:{rng.randrange(60):02d}", agent=f"agent-{rng.randrange(50)}",
            sha=f"{rng.getrandbits(28):07x}", n=rng.randrange(1000), path=rng.choice(PATHS),
        )
        out.append(f"{text} #{i} {rng.getrandbits(40):x}" if distinct else text)
    return out


def rate(count: int, step: Callable[[], object], repeat: int) -> float:
    """Median messages/s of `repeat` runs of `step` over `count` messages."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        runs.append(count / (time.perf_counter() - start))
    return statistics.median(runs)


def classify_all(lines: list[str], cache_size: int) -> Callable[[], object]:
    def step() -> object:
        classifier = Classifier(cache_size=cache_size)
        return [classifier.classify(t) for t in lines]

    return step


def statuses(lines: list[str], rng: random.Random) -> list[Message]:
    t0 = 1_717_000_000_000
    return [
        message(StatusBody(text=t), sender=f"agent-{rng.randrange(50)}", ts=t0 + i * 20)
        for i, t in enumerate(lines)
    ]


async def detect(redis: Redis, settings: Settings, msgs: list[Message], one_by_one: bool) -> float:
    await _clean(redis)
    detector = Detector(redis, settings, RepetitionSettings())
    start = time.perf_counter()
    if one_by_one:
        for msg in msgs:
            await detector.observe(msg)
    else:
        await detector.observe_many(msgs)
    return len(msgs) / (time.perf_counter() - start)


async def _clean(redis: Redis) -> None:
    async for key in redis.scan_iter(match=f"swarm:{{{SWARM_NAME}}}:*", count=1000):
        await redis.delete(key)


async def run(url: str, args: argparse.Namespace) -> None:
    rng = random.Random(1)
    cold = texts(args.count, rng, distinct=True)
    warm = texts(args.count, rng, distinct=False)
    # a cache of 1 entry is cleared on every miss: no text is ever served from it
    cold_rate = rate(len(cold), classify_all(cold, cache_size=1), args.repeat)
    warm_rate = rate(len(warm), classify_all(warm, cache_size=16_384), args.repeat)
    print(f"classify, cold (all {len(cold):,} texts distinct, no cache): {cold_rate:>10,.0f} msg/s "
          f"(target >= {TARGET:,}: {'ok' if cold_rate >= TARGET else 'MISSED'})")
    print(f"classify, warm (repeating chatter, cache on):           {warm_rate:>10,.0f} msg/s")

    settings = Settings(redis_url=url, name=SWARM_NAME)
    async with open_redis(settings) as redis:
        msgs = statuses(cold, rng)
        batched = await detect(redis, settings, msgs, one_by_one=False)
        single = await detect(redis, settings, msgs[: args.count // 5], one_by_one=True)
        await _clean(redis)
    print(f"detect through Redis, observe_many (batches of 500):   {batched:>10,.0f} msg/s")
    print(f"detect through Redis, observe one at a time:           {single:>10,.0f} msg/s")


def main() -> None:
    """Parse options, start a throwaway server unless SWARM_REDIS_URL is set, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50_000, help="messages per run (default 50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per classification figure (median)")
    args = parser.parse_args()
    url = os.environ.get("SWARM_REDIS_URL")
    if url:
        anyio.run(run, url, args)
        return
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        server = EmbeddedServer(Path(tmp))
        try:
            anyio.run(run, server.ensure().url, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
