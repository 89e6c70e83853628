"""Budgets a program enforces, inside the board scripts: per task, per agent, per swarm."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.bus import Bus
from swarm.captain import Captain
from swarm.errors import NotReady, OverBudget, StaleToken
from swarm.progress import report_progress
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from tests.helpers import eventually


def spec(title: str, **fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"kind": "work", "title": title, **fields})


async def test_usage_adds_up_and_a_task_past_its_budget_fails_at_once(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec("costly", budget_usd=1.0))
    got = await board.claim_next("a1", ["work"])
    assert got is not None
    after, over = await board.usage(task.id, got.token, agent="a1", tokens=1200, usd=0.4)
    assert (over, after.spent_usd, after.tokens, after.state) == (False, 0.4, 1200, "running")
    after, over = await board.usage(task.id, got.token, agent="a1", tokens=800, usd=0.7)
    assert over
    assert (after.state, after.tokens, after.reason) == ("failed", 2000, "over budget: spent $1.1 of its $1 budget")
    with pytest.raises(StaleToken):  # the owner's token is fenced off: its handler must stop
        await board.heartbeat(task.id, got.token, agent="a1")
    spend = await board.spend()
    assert spend["swarm"] == pytest.approx(1.1)
    assert spend["agent:a1"] == pytest.approx(1.1)
    assert spend["tokens:swarm"] == 2000


async def test_an_over_budget_swarm_refuses_claims_and_assignments_and_why_says_so(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    await board.set_budget(2.0)
    first, _ = await board.create(spec("first"))
    waiting, _ = await board.create(spec("second"))
    got = await board.claim_next("a1", ["work"])
    assert got is not None
    await board.usage(first.id, got.token, agent="a1", usd=2.5)
    claimed = await board.claim("a1", ["work"], 1)
    assert (claimed.tasks, claimed.budget) == ([], "the swarm has spent its budget ($2.5 of $2, SWARM_BUDGET_USD)")
    with pytest.raises(NotReady) as exc:
        await board.assign(waiting.id, "a2")
    assert str(exc.value) == ("task t-2 cannot go to a2: the swarm has spent its budget ($2.5 of $2, "
                              "SWARM_BUDGET_USD)")
    assert await Captain(redis, settings).why(waiting.id) == (
        "t-2 is open, but nothing is handed out: the swarm has spent its budget ($2.50 of $2.00, SWARM_BUDGET_USD).")
    await board.set_budget(None)
    assert (await board.claim("a1", ["work"], 1)).tasks[0].id == waiting.id


async def test_an_agents_card_budget_stops_only_that_agent(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    registry = Registry(redis, settings)
    await registry.register(AgentCard(name="thrifty", capabilities=("work",), budget_usd=0.5), "i-1")
    for n in range(2):
        await board.create(spec(f"job {n}"))
    got = await board.claim_next("thrifty", ["work"])
    assert got is not None
    await board.usage(got.id, got.token, agent="thrifty", usd=0.5)
    assert (await board.claim("thrifty", ["work"], 1)).budget == (
        "thrifty has spent its budget ($0.5 of $0.5, its card's budget_usd)")
    assert await board.claim_next("other", ["work"]) is not None


async def test_a_handler_that_reports_past_its_tasks_budget_is_stopped(redis: Redis, settings: Settings) -> None:
    fast = settings.model_copy(update={"lease_s": 1.0, "heartbeat_s": 0.1})
    board = Board(redis, fast)
    task, _ = await board.create(spec("costly", budget_usd=0.1))
    outcome: list[str] = []

    async def spender(t: Task, ctx: Context) -> str:
        assert await ctx.usage(tokens=10, usd=0.05)
        assert not await ctx.usage(tokens=10, usd=0.10)  # over: the agent stops this handler
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            outcome.append("stopped")
            raise
        return "never"

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), spender)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run, stop)
        await eventually(lambda: _true(bool(outcome)), within=5)
        stop.set()
    failed = await board.get(task.id)
    assert (failed.state, failed.reason, outcome) == ("failed", "over budget: spent $0.15 of its $0.1 budget",
                                                     ["stopped"])


async def _true(value: bool) -> bool:
    return value


async def test_progress_with_usage_says_when_the_task_went_over(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec("costly", budget_usd=1))
    got = await board.claim_next("a1", ["work"])
    assert got is not None
    bus = Bus(redis, settings)
    ok = await report_progress(board, bus, task.id, got.token, "half way", agent="a1", tokens=50, usd=0.5)
    assert ok.spent_usd == 0.5
    with pytest.raises(OverBudget) as exc:
        await report_progress(board, bus, task.id, got.token, "nearly", agent="a1", usd=0.6)
    assert str(exc.value) == ("t-1 went over its budget and failed: over budget: spent $1.1 of its $1 budget; "
                              "stop working on it")
