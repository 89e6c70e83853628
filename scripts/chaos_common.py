"""What the chaos drills share: a drain of N tasks by claiming workers that keep a ledger of what
they did and what the board acknowledged, and the table every drill prints.

The ledger is kept outside Redis, so it survives whatever the drill does to the server:

    effects   task -> how many times a worker ran it (the side effect happened)
    acked     task -> the token of each completion the board acknowledged

and at the end the board's own view (state and token of every task) is compared with it:

    lost               tasks not done at the end (the swarm failed to finish them)
    acks lost          acknowledged completions the board no longer has: the task's final token is
                       not the one its first acknowledged completion carried (it was run again)
    completed twice    tasks whose completion was acknowledged more than once
    ran twice          tasks whose work ran more than once (acked or not)
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.connection import Backoff
from swarm.errors import BackendError, SwarmError
from swarm.settings import Settings

KIND = "drill"


@dataclass
class Ledger:
    """What the workers did and what the board acknowledged, by task id."""

    effects: Counter[str] = field(default_factory=Counter)
    acked: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    ack_times: list[float] = field(default_factory=list)
    fresh_acks: list[tuple[float, float]] = field(default_factory=list)
    """(claimed at, acknowledged at) of every acknowledged completion, monotonic."""
    errors: int = 0


@dataclass
class Outcome:
    """One run of a drill, as its table row needs it."""

    lost: int
    acks_lost: int
    completed_twice: int
    ran_twice: int
    recovery_s: float | None
    rate: float | None = None


class Drain:
    """`workers` claiming workers draining a board (claim, run, complete), retrying what Redis
    fails like an agent does (`Backoff`), plus the reaper the captain runs (expired leases back)."""

    def __init__(self, redis: Redis, settings: Settings, *, workers: int = 8) -> None:
        self.board = Board(redis, settings, speak=False)
        self.workers = workers
        self.ledger = Ledger()
        self.finished = anyio.Event()
        self.milestone = 0
        self.reached = anyio.Event()
        """Set once `milestone` completions have been acknowledged (where a drill strikes)."""

    async def fill(self, count: int) -> list[str]:
        """Create `count` tasks; their ids."""
        made = await self.board.create_many([TaskSpec(kind=KIND, title=f"drill task {n}") for n in range(count)])
        return [task_id for task_id, _ in made]

    async def run(self, total: int) -> None:
        """Drain until `total` tasks are done (or the caller cancels)."""
        async with anyio.create_task_group() as tg:
            for n in range(self.workers):
                tg.start_soon(self._work, f"w{n}")
            tg.start_soon(self._reap)
            await self._watch(total)
            tg.cancel_scope.cancel()

    async def _work(self, name: str) -> None:
        backoff = Backoff()
        while True:
            try:
                task = await self.board.claim_next(name, [KIND])
            except BackendError:
                self.ledger.errors += 1
                await backoff.wait()
                continue
            backoff.reset()
            if task is None:
                await anyio.sleep(0.02)
                continue
            claimed_at = time.monotonic()
            self.ledger.effects[task.id] += 1  # the work is done; now tell the board
            while True:
                try:
                    await self.board.complete(task.id, task.token, "ok", agent=name)
                except BackendError:  # the answer is lost, not the question: ask again, as an agent does
                    self.ledger.errors += 1
                    await backoff.wait()
                    continue
                except SwarmError:  # refused: the task moved on (stale token, done already)
                    break
                self.ledger.acked[task.id].append(task.token)
                self.ledger.ack_times.append(time.monotonic())
                self.ledger.fresh_acks.append((claimed_at, self.ledger.ack_times[-1]))
                if len(self.ledger.ack_times) >= self.milestone:
                    self.reached.set()
                backoff.reset()
                break

    async def _reap(self) -> None:
        while True:
            with contextlib.suppress(BackendError):
                await self.board.reclaim_expired()
            await anyio.sleep(0.25)

    async def _watch(self, total: int) -> None:
        while True:
            try:
                if (await self.board.counts())["done"] >= total:
                    self.finished.set()
                    return
            except BackendError:
                pass
            await anyio.sleep(0.1)

    async def outcome(self, ids: Sequence[str], since: float | None) -> Outcome:
        """Compare the ledger with the board (see the module doc); recovery: from `since` (the
        fault) to the first acknowledged completion of a task claimed after it (a reply already on
        its way when the fault struck does not count)."""
        tasks = {t.id: t for t in await self.board.tasks(limit=len(ids) + 10)} if ids else {}
        lost = sum(1 for i in ids if i not in tasks or tasks[i].state != "done")
        acks_lost = sum(1 for i, tokens in self.ledger.acked.items() if i in tasks and tokens[0] != tasks[i].token)
        after = [acked for claimed, acked in self.ledger.fresh_acks if since is not None and claimed > since]
        return Outcome(
            lost=lost, acks_lost=acks_lost,
            completed_twice=sum(1 for tokens in self.ledger.acked.values() if len(tokens) > 1),
            ran_twice=sum(1 for n in self.ledger.effects.values() if n > 1),
            recovery_s=(min(after) - since) if after and since is not None else None,
        )


async def until(check: Callable[[], Awaitable[object]], within: float, every: float = 0.02) -> bool:
    """Poll `check` until it returns something truthy (True), or `within` seconds pass (False)."""
    with anyio.move_on_after(within):
        while True:
            if await check():
                return True
            await anyio.sleep(every)
    return False


def table(title: str, rows: Sequence[tuple[str, Sequence[Outcome]]], *, rate: bool = False) -> str:
    """The drill's table: one row per mode, figures summed over its runs, recovery median / max."""
    head = ["mode", "runs", "lost", "acks lost", "completed twice", "ran twice", "recovery s (median / max)"]
    if rate:
        head.append("drain tasks/s (median)")
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for mode, outcomes in rows:
        recoveries = [o.recovery_s for o in outcomes if o.recovery_s is not None]
        recovery = (f"{statistics.median(recoveries):.2f} / {max(recoveries):.2f}" if recoveries else "-")
        if len(recoveries) < len(outcomes):
            recovery += f" ({len(outcomes) - len(recoveries)} never)"
        cells = [mode, str(len(outcomes)), str(sum(o.lost for o in outcomes)), str(sum(o.acks_lost for o in outcomes)),
                 str(sum(o.completed_twice for o in outcomes)), str(sum(o.ran_twice for o in outcomes)), recovery]
        if rate:
            rates = [o.rate for o in outcomes if o.rate]
            cells.append(f"{statistics.median(rates):.0f}" if rates else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
