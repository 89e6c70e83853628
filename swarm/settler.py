"""Group commit for one agent: assignments are started, and finished tasks reported, in batches.

While one script call is in flight, the requests that arrive meanwhile queue up and go together in
the next call, so a busy agent pays one round trip for many tasks. A settle also claims the slots
its finished tasks free, in the same call. Finished work is never given up: a report that cannot
reach Redis is retried until it can, and `flush` reports what is queued before the agent exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from swarm.board import Board, Claimed, Settled, Task
from swarm.connection import retrying
from swarm.errors import SwarmError

J = TypeVar("J")
"""What the agent tracks a task by (its job); handed back with the task's outcome."""


@dataclass
class _Start:
    task_id: str
    token: int
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Task | SwarmError | None = None


@dataclass(frozen=True, slots=True)
class Finished(Generic[J]):
    """A finished task waiting to be reported as done."""

    job: J
    task: Task
    token: int
    result: str


Settle = Callable[[list[tuple[Finished[J], Settled]], Claimed], None]
"""What the agent does with a settle's outcome: each report's result, and the tasks claimed."""


class Settler(Generic[J]):
    """Starts and reports one agent's tasks in batches; `run` is its loop, `flush` its last word.

    `room(n)` says how many tasks to claim when `n` finished tasks are reported (0: claim none);
    `claiming` is the agent's claim lock, held across a settle so that the freed slots are counted
    once; `settled` receives every settle's outcome."""

    def __init__(self, board: Board, agent: str, caps: Sequence[str], *, claiming: anyio.Lock,
                 room: Callable[[int], int], settled: Settle[J]) -> None:
        self.board = board
        self.agent = agent
        self.caps = caps
        self._claiming = claiming
        self._room = room
        self._settled = settled
        self._starts: list[_Start] = []
        self._outbox: list[Finished[J]] = []
        self._kick = anyio.Event()

    async def start(self, task_id: str, token: int) -> Task:
        """assigned -> running, batched with the other starts that arrive meanwhile; raises the
        board's refusal (a stale token, a cancelled task)."""
        request = _Start(task_id, token)
        self._starts.append(request)
        self._kick.set()
        await request.done.wait()
        if isinstance(request.result, SwarmError):
            raise request.result
        assert request.result is not None
        return request.result

    def report(self, finished: Finished[J]) -> None:
        """Queue a finished task; the settler reports it with the others that finish meanwhile."""
        self._outbox.append(finished)
        self._kick.set()

    async def run(self) -> None:
        """Start and report whatever is queued, a batch per call, until cancelled."""
        while True:
            await self._kick.wait()
            self._kick = anyio.Event()
            while self._outbox or self._starts:
                if self._starts:
                    starts, self._starts = self._starts, []
                    await self._start_batch(starts)
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    await self._settle(batch)

    async def flush(self) -> None:
        """Report what finished but is not settled yet (a settle may be in flight), claiming
        nothing: call it before cancelling `run`, so finished work is never left to a lease."""
        with anyio.move_on_after(5.0, shield=True):
            async with self._claiming:  # wait for a settle call in flight
                pass
            while self._outbox:
                batch, self._outbox = self._outbox, []
                await self._settle(batch, claim=False)

    async def _start_batch(self, batch: list[_Start]) -> None:
        started = [(r.task_id, r.token) for r in batch]
        results = await retrying(lambda: self.board.start_many(self.agent, started), "start tasks")
        for request, (_, result) in zip(batch, results, strict=True):
            request.result = result
            request.done.set()

    async def _settle(self, batch: list[Finished[J]], *, claim: bool = True) -> None:
        reports = [(f.task.id, f.token, f.result) for f in batch]
        async with self._claiming:  # the freed slots are refilled in the same call
            more = max(0, self._room(len(batch))) if claim else 0
            settled, claimed = await retrying(
                lambda: self.board.settle(self.agent, reports, claim=more, caps=self.caps), "report tasks done")
            self._settled(list(zip(batch, settled, strict=True)), claimed)
