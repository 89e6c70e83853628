"""One node, many agents: 1,000 simulated agents heartbeating at the default period, a real captain
assigning, some agents claiming, over 10,000 tasks; then Redis memory for 100,000 finished tasks.

    .venv/bin/python scripts/bench_scale.py                 # 1,000 agents, 10,000 tasks
    .venv/bin/python scripts/bench_scale.py --agents 200 --tasks 2000

The agents live in this process (each registers with a card of concurrency `--slots`, renews its
registry entry every heartbeat period as `swarm agent run` does, and `--claimers` of them claim work
and settle it at once); `swarm captain run` is a real process. Tasks are created in batches
(Board.create_many) at `--rate` per second. Reported, from the board-event stream's own timestamps:
created -> assigned (captain) and created -> claimed latency, p50/p99; the server's CPU (from /proc);
Redis memory per registered agent and per open task; and memory for 100,000 finished tasks with
their history, before and after the retention purge.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.connection import client
from swarm.registry import AgentCard, Registry
from swarm.server import EmbeddedServer
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def heartbeats(registry: Registry, names: list[str], stop: anyio.Event, period: float) -> None:
    """Every agent's registry heartbeat, each once per period, spread over the period."""
    while not stop.is_set():
        began = time.monotonic()
        for i, name in enumerate(names):
            await registry.heartbeat(name, f"i-{name}")
            target = began + period * (i + 1) / len(names)
            if (lag := target - time.monotonic()) > 0:
                await anyio.sleep(lag)


async def claimer(board: Board, name: str, stop: anyio.Event) -> None:
    """As `swarm agent run` claims: up to 5, reported done at once (settle) with the next claim in the
    same call; when a claim comes back short, wait for a board event after its tip."""
    held: list[tuple[str, int]] = []
    while not stop.is_set():
        _, claimed = await board.settle(name, [(i, t, "ok") for i, t in held], claim=5, caps=["scale"])
        held = [(t.id, t.token) for t in claimed.tasks]
        if not held and claimed.tip is not None:
            await board.redis.xread({board.keys.events: claimed.tip}, block=500, count=1)


async def latencies(redis: Redis, board: Board) -> tuple[list[float], list[float]]:
    """created -> assigned and created -> claimed, ms, from the board-event stream."""
    created: dict[str, int] = {}
    assigned: list[float] = []
    claimed: list[float] = []
    last = "0-0"
    while True:
        rows = await redis.xrange(board.keys.events, f"({last}" if last != "0-0" else "-", "+", count=10_000)
        if not rows:
            return assigned, claimed
        for entry_id, fields in rows:
            last = entry_id.decode()
            msg = json.loads(fields[b"m"])
            body = msg["body"]
            if body["event"] == "created":
                created[body["task_id"]] = msg["ts"]
            elif body["event"] in ("assigned", "claimed") and body["task_id"] in created:
                (assigned if body["event"] == "assigned" else claimed).append(msg["ts"] - created[body["task_id"]])


async def feed(board: Board, first: int, count: int, rate: int) -> None:
    """`count` tasks at `rate` per second, in batches (Board.create_many), then wait until none is open."""
    batch = max(1, rate // 10)
    for start in range(first, first + count, batch):
        await board.create_many([TaskSpec(kind="scale", title=f"job {n}")
                                 for n in range(start, min(first + count, start + batch))])
        await anyio.sleep(batch / rate)
    with anyio.move_on_after(120):
        while (await board.counts())["open"] > 0:  # noqa: ASYNC110 - polling the board is the point
            await anyio.sleep(0.2)


async def run(url: str, server_pid: int, args: argparse.Namespace, home: Path) -> None:  # noqa: PLR0915
    settings = Settings(redis_url=url, name="scale", home=home)
    redis = client(url, settings)
    board, registry = Board(redis, settings), Registry(redis, settings)
    base = await memory(redis)
    names = [f"sim-{n:04d}" for n in range(args.agents)]
    for name in names:
        await registry.register(AgentCard(name=name, capabilities=("scale",), concurrency=args.slots), f"i-{name}")
    per_agent = (await memory(redis) - base) / args.agents
    env = {**os.environ, "SWARM_REDIS_URL": url, "SWARM_NAME": "scale", "SWARM_HOME": str(home),
           "SWARM_LOG_LEVEL": "warning"}
    stop = anyio.Event()
    cpu_before = cpu_seconds(server_pid)
    began = time.monotonic()
    half = args.tasks // 2
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeats, registry, names, stop, settings.heartbeat_period_s)
        # Phase 1: the captain assigns every task (no agent claims).
        captain = await anyio.open_process([sys.executable, "-m", "swarm", "captain", "run"], cwd=ROOT, env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await anyio.sleep(1.5)  # the captain elects itself
            await feed(board, 0, half, args.rate)
        finally:
            captain.terminate()
            await captain.wait()
        # Phase 2: agents claim (no captain).
        async with anyio.create_task_group() as claimers:
            for name in names[:args.claimers]:
                claimers.start_soon(claimer, board, name, stop)
            await feed(board, half, args.tasks - half, args.rate)
            stop.set()
    seconds = time.monotonic() - began
    server_cpu = cpu_seconds(server_pid) - cpu_before
    assigned, claimed = await latencies(redis, board)
    per_task = (await memory(redis) - base - per_agent * args.agents) / args.tasks

    await redis.flushdb()
    before_done = await memory(redis)
    finished = args.finished
    for start in range(0, finished, 1000):
        made = await board.create_many([TaskSpec(kind="done", title=f"finished {n}")
                                        for n in range(start, min(finished, start + 1000))])
        claimed_tasks = (await board.claim("finisher", ["done"], len(made))).tasks
        await board.settle("finisher", [(t.id, t.token, "ok") for t in claimed_tasks])
    with_done = await memory(redis)
    await anyio.sleep(0.01)
    purged = await board.purge(0)
    after_purge = await memory(redis)
    await redis.aclose()

    print(f"| measure | {args.agents:,} agents, {args.tasks:,} tasks, {args.claimers} claiming |")
    print("| --- | --- |")
    print(f"| created -> assigned by the captain, ms | p50 {pct(assigned, 50):.1f}, p99 {pct(assigned, 99):.1f}, "
          f"max {max(assigned, default=float('nan')):.1f} ({len(assigned):,} tasks) |")
    print(f"| created -> claimed by an agent, ms | p50 {pct(claimed, 50):.1f}, p99 {pct(claimed, 99):.1f} "
          f"({len(claimed):,} tasks) |")
    print(f"| server CPU over the run | {server_cpu:.2f} s in {seconds:.1f} s "
          f"({server_cpu / seconds * 100:.0f} % of a core) |")
    print(f"| Redis memory per registered agent | {per_agent:,.0f} bytes |")
    print(f"| Redis memory per open task (with its history) | {per_task:,.0f} bytes |")
    print(f"| Redis memory, {finished:,} finished tasks kept (SWARM_KEEP_DONE, 7 days) | "
          f"{(with_done - before_done) / 1e6:,.1f} MB ({(with_done - before_done) / finished:,.0f} bytes each) |")
    print(f"| ... after the retention purge ({purged:,} forgotten) | {(after_purge - before_done) / 1e6:,.1f} MB "
          "(what stays: the board-event and bus streams, trimmed by MAXLEN, not by retention) |")
    if assigned:
        print(f"\nassignment p99 < 50 ms: {'PASS' if pct(assigned, 99) < 50 else 'FAIL'} "
              f"(median of all: {statistics.median(assigned):.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=10, help="concurrency on each agent's card")
    parser.add_argument("--claimers", type=int, default=50, help="agents that claim work themselves")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000, help="tasks created per second")
    parser.add_argument("--finished", type=int, default=100_000, help="finished tasks for the memory figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarm-scale-") as tmp:
        home = Path(tmp)
        server = EmbeddedServer(home / "server")
        state = server.ensure()
        try:
            anyio.run(run, state.url, state.pid, args, home)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
