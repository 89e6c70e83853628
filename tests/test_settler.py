"""The settler: an agent's starts and reports go in batches, refusals come back one by one, and
what finished is reported before the agent exits."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis

from swarm.board import Board, Claimed, Settled, TaskSpec
from swarm.errors import StaleToken
from swarm.settings import Settings
from swarm.settler import Finished, Settler


def spec(title: str) -> TaskSpec:
    return TaskSpec(kind="audit", title=title)


class Outcomes:
    """What the settler handed back to its agent."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str | None]] = []
        self.claimed: list[str] = []

    def __call__(self, outcomes: list[tuple[Finished[str], Settled]], claimed: Claimed) -> None:
        self.reports += [(f.job, None if s.error is None else type(s.error).__name__) for f, s in outcomes]
        self.claimed += [t.id for t in claimed.tasks]


async def test_starts_that_arrive_together_go_in_one_call_and_a_stale_one_is_refused(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"job {n}")))[0].id for n in range(3)]
    tokens = [(await board.assign(task_id, "a1")).token for task_id in ids]
    await redis.config_resetstat()
    settler = Settler[str](board, "a1", ["audit"], claiming=anyio.Lock(), room=lambda n: 0, settled=Outcomes())
    started: dict[str, str] = {}

    async def start(task_id: str, token: int) -> None:
        try:
            started[task_id] = (await settler.start(task_id, token)).state
        except StaleToken as exc:
            started[task_id] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        async with anyio.create_task_group() as starts:
            for task_id, token in zip(ids, tokens, strict=True):
                starts.start_soon(start, task_id, token + (1 if task_id == ids[2] else 0))
        tg.cancel_scope.cancel()
    assert started == {ids[0]: "running", ids[1]: "running",
                       ids[2]: f"token {tokens[2] + 1} for task {ids[2]} was never issued: use the token your "
                               "claim or assignment gave you"}
    stats = await redis.info("commandstats")
    evalsha = stats["cmdstat_evalsha"]
    assert evalsha["calls"] - evalsha["failed_calls"] == 1  # one script call for the three (after a NOSCRIPT)


async def test_a_settle_reports_the_batch_and_claims_the_room_it_is_given(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"job {n}")))[0].id for n in range(5)]
    mine = (await board.claim("a1", ["audit"], 2)).tasks
    outcomes = Outcomes()
    asked: list[int] = []
    settled = anyio.Event()

    def room(finishing: int) -> int:
        asked.append(finishing)
        return finishing + 1

    def record(results: list[tuple[Finished[str], Settled]], claimed: Claimed) -> None:
        outcomes(results, claimed)
        settled.set()

    settler = Settler[str](board, "a1", ["audit"], claiming=anyio.Lock(), room=room, settled=record)
    for task in mine:
        settler.report(Finished(f"job of {task.id}", task, task.token, "ok"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(settler.run)
        with anyio.fail_after(5):
            await settled.wait()
        tg.cancel_scope.cancel()
    assert asked == [2]
    assert outcomes.reports == [(f"job of {ids[0]}", None), (f"job of {ids[1]}", None)]
    assert outcomes.claimed == ids[2:5]
    assert [(await board.get(i)).state for i in ids] == ["done", "done", "running", "running", "running"]


async def test_flush_reports_what_is_queued_without_the_loop_and_claims_nothing(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    first, _ = await board.create(spec("first"))
    await board.create(spec("second"))
    task = (await board.claim("a1", ["audit"], 1)).tasks[0]
    outcomes = Outcomes()
    settler = Settler[str](board, "a1", ["audit"], claiming=anyio.Lock(), room=lambda n: pytest.fail("no claim"),
                           settled=outcomes)
    settler.report(Finished("j", task, task.token, "ok"))
    settler.report(Finished("k", task, task.token + 5, "late"))  # a stale report: refused, not lost
    await settler.flush()
    assert outcomes.reports == [("j", None), ("k", "StaleToken")]
    assert outcomes.claimed == []
    assert (await board.get(first.id)).result == "ok"
