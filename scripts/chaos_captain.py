"""Chaos drill: the leading captain is frozen (SIGSTOP) past its leader lease, then resumed (SIGCONT).

Each run starts an embedded server, two captain processes (this file with `--captain`; leader lease
`--lease`, 2 s by default), and one agent in this process that only takes assignments (no claiming),
while tasks arrive every 20 ms. The leading captain is frozen for `--freeze` leases, then resumed.
The standby must take the lease over and assign; the resumed captain must step down and assign
nothing with its stale epoch: the assign script checks the epoch against the lease in the same step,
so its first attempt, if it makes one before it learns, is refused.

    lost              tasks not done at the end
    completed twice   tasks with more than one `done` in their history, or run twice by the agent
    recovery          freeze -> the agent starts a task created after the freeze
    stale assigns     tasks the old leader placed in assign calls it began after it was resumed
    refused           assign calls the old leader began after it was resumed, still on its old
                      epoch, that the assign script refused (it learns it was deposed either way)

    .venv/bin/python scripts/chaos_captain.py                 # 5 runs
    .venv/bin/python scripts/chaos_captain.py --runs 1 --lease 5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream
from chaos_common import until  # (scripts/ is on the path: this file runs from it)

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.captain import Captain, Slot
from swarm.connection import open_redis
from swarm.logs import configure
from swarm.registry import AgentCard
from swarm.server import EmbeddedServer
from swarm.settings import Settings


class ReportingCaptain(Captain):
    """A captain that prints each state change and each assign call (monotonic times, which are
    the same clock in every process on Linux), so the drill knows who did what when."""

    async def _assign(self, pairs: list[tuple[Task, str]], slots: list[Slot]) -> int:
        began, epoch = time.monotonic(), self.epoch
        placed = await super()._assign(pairs, slots)
        if pairs:
            print(f"assign {epoch} {placed} {began:.6f} {time.monotonic():.6f}", flush=True)
        return placed


async def captain_main() -> None:
    settings = Settings()
    configure("warning", json=True)
    async with open_redis(settings) as redis:
        captain = ReportingCaptain(redis, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(captain.run)
            was = -1
            while True:
                if captain.epoch != was:
                    print(f"epoch {captain.epoch} {time.monotonic():.6f}", flush=True)
                    was = captain.epoch
                await anyio.sleep(0.005)


class Child:
    """One captain process and what it printed."""

    def __init__(self, name: str, proc: anyio.abc.Process) -> None:
        self.name = name
        self.proc = proc
        self.epochs: list[tuple[int, float]] = []
        self.assigns: list[tuple[int, int, float, float]] = []

    async def read(self) -> None:
        assert self.proc.stdout is not None
        lines = BufferedByteReceiveStream(self.proc.stdout)
        while True:
            try:
                words = (await lines.receive_until(b"\n", 4096)).decode().split()
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                return
            if words[0] == "epoch":
                self.epochs.append((int(words[1]), float(words[2])))
            elif words[0] == "assign":
                self.assigns.append((int(words[1]), int(words[2]), float(words[3]), float(words[4])))

    @property
    def leading(self) -> bool:
        return bool(self.epochs) and self.epochs[-1][0] > 0


async def one_run(home: Path, args: argparse.Namespace) -> dict[str, float | int | None]:  # noqa: PLR0915 - a drill reads top to bottom
    server = EmbeddedServer(home)
    state = server.ensure()
    settings = Settings(redis_url=state.url, name="drill", home=home, leader_lease_s=args.lease, lease_s=10.0,
                        heartbeat_s=0.5)
    env = {**os.environ, "SWARM_REDIS_URL": state.url, "SWARM_NAME": "drill", "SWARM_LEADER_LEASE_S": str(args.lease),
           "SWARM_HEARTBEAT_S": "0.5", "SWARM_LEASE_S": "10", "SWARM_HOME": str(home)}
    started: Counter[str] = Counter()
    start_times: dict[str, float] = {}
    created: dict[str, float] = {}

    async def handler(task: Task, ctx: Context) -> str:
        started[task.id] += 1
        start_times.setdefault(task.id, time.monotonic())
        await anyio.sleep(0.01)
        return "ok"

    children: list[Child] = []
    try:
        async with open_redis(settings) as redis, anyio.create_task_group() as tg:
            board = Board(redis, settings)
            stop = anyio.Event()
            agent = Agent(redis, settings, AgentCard(name="a1", capabilities=("drill",), concurrency=8), handler,
                          claim=False)
            await tg.start(agent.run, stop)
            for name in ("c1", "c2"):
                proc = await anyio.open_process([sys.executable, __file__, "--captain"], env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                children.append(Child(name, proc))
                tg.start_soon(children[-1].read)
                await anyio.sleep(0.3)  # c1 leads first

            async def feed() -> None:
                n = 0
                while True:
                    task, _ = await board.create(TaskSpec(kind="drill", title=f"drill task {n}"))
                    created[task.id] = time.monotonic()
                    n += 1
                    await anyio.sleep(0.02)

            feeding = anyio.CancelScope()
            tg.start_soon(_until_cancelled, feed, feeding)
            assert await until(lambda: _true(any(c.leading for c in children)), 20), "no captain leads"
            await anyio.sleep(1.0)
            leader = next(c for c in children if c.leading)
            standby = next(c for c in children if c is not leader)
            old_epoch = leader.epochs[-1][0]
            leader.proc.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            await anyio.sleep(args.freeze * args.lease)
            leader.proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            await anyio.sleep(2 * args.lease)  # the old leader runs again: it must step down
            feeding.cancel()

            async def finished() -> bool:
                return (await board.counts())["done"] >= len(created)

            await until(finished, 20, 0.1)  # what is left is assigned and done
            tasks = await board.tasks(limit=100_000)
            twice = 0
            for t in tasks:
                events = [e.body.event for e in await board.history(t.id)]
                twice += events.count("done") > 1 or started[t.id] > 1
            stop.set()
            for child in children:
                child.proc.terminate()
    finally:
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
        server.stop()
    after_freeze = [start_times[i] for i, at in created.items() if at > frozen and i in start_times]
    late = [placed for epoch, placed, began, _ in leader.assigns if began > resumed and epoch == old_epoch]
    stale = sum(placed for placed in late if placed > 0)
    took_over = next((at for epoch, at in standby.epochs if epoch > old_epoch), None)
    return {
        "lost": sum(1 for t in tasks if t.state != "done") + (len(created) - len(tasks)),
        "twice": twice,
        "recovery": (min(after_freeze) - frozen) if after_freeze else None,
        "takeover": (took_over - frozen) if took_over else None,
        "stale": stale,
        "refused": sum(1 for placed in late if placed < 0),
        "stepped_down": int(bool(leader.epochs) and leader.epochs[-1][0] == 0),
        "tasks": len(created),
    }


async def _true(value: bool) -> bool:
    return value


async def _until_cancelled(step: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
    with scope:
        await step()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease", type=float, default=2.0, help="leader lease, s")
    parser.add_argument("--freeze", type=float, default=2.0, help="how long the leader is frozen, in leases")
    parser.add_argument("--captain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.captain:
        await captain_main()
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    results = []
    with tempfile.TemporaryDirectory(prefix="swarm-chaos-captain-") as tmp:
        for run in range(args.runs):
            result = await one_run(Path(tmp) / f"run-{run}", args)
            print(f"  run {run}: {result}", flush=True)
            results.append(result)
    recoveries = [float(r["recovery"]) for r in results if r["recovery"] is not None]
    takeovers = [float(r["takeover"]) for r in results if r["takeover"] is not None]
    print()
    print(f"leading captain SIGSTOPped for {args.freeze:g} leader leases ({args.lease:g} s), then resumed")
    print()
    print("| runs | lost | completed twice | recovery s (median / max) | standby leads after s (median) "
          "| stale assigns | refused | old leader stepped down |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    lost, twice = sum(int(r["lost"] or 0) for r in results), sum(int(r["twice"] or 0) for r in results)
    print(f"| {len(results)} | {lost} | {twice} "
          f"| {statistics.median(recoveries):.2f} / {max(recoveries):.2f} | {statistics.median(takeovers):.2f} "
          f"| {sum(int(r['stale'] or 0) for r in results)} | {sum(int(r['refused'] or 0) for r in results)} "
          f"| {sum(int(r['stepped_down'] or 0) for r in results)}"
          f"/{len(results)} |")


if __name__ == "__main__":
    anyio.run(main)
