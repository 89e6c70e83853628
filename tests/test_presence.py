"""Recovery in seconds on default settings: a dead agent's connections tell, not its lease."""

from __future__ import annotations

import os
import signal
import time

import anyio
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.keys import Keys
from swarm.presence import Presence, named
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from tests.helpers import eventually, spawn


async def _history(board: Board, task_id: str) -> list[tuple[str, str]]:
    return [(e.body.event, e.body.detail) for e in await board.history(task_id)]


async def test_a_sigkilled_agents_task_runs_elsewhere_within_seconds_on_the_default_lease(
    redis: Redis, settings: Settings
) -> None:
    assert settings.lease_s == 30.0  # the default: recovery must not wait for it
    board = Board(redis, settings)
    task, _ = await board.create(TaskSpec(kind="work", title="long job"))
    first = spawn(settings, "a1", "slow")
    done = anyio.Event()

    async def finish(t: Task, ctx: Context) -> str:
        done.set()
        return "finished by a2"

    try:
        await eventually(lambda: _owner_is(board, task.id, "a1"), within=15)
        killed = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        agent = Agent(redis, settings, AgentCard(name="a2", capabilities=("work",)), finish)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run, stop)
            with anyio.fail_after(5):
                await done.wait()
            recovered = time.monotonic() - killed
            stop.set()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert recovered < 5
    assert (await board.get(task.id)).owner == "a2"
    assert ("expired", "connections of a1 closed") in await _history(board, task.id)
    assert {a.card.name: a.liveness for a in await Registry(redis, settings).all()}["a1"] == "gone"


async def _owner_is(board: Board, task_id: str, owner: str) -> bool:
    return (await board.get(task_id)).owner == owner


async def test_a_restarted_agent_takes_back_its_predecessors_tasks_when_it_registers(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    registry = Registry(redis, settings)
    for n in range(3):
        await board.create(TaskSpec(kind="work", title=f"job {n}", max_attempts=1 if n == 2 else 3))
    await registry.register(AgentCard(name="a1", capabilities=("work",)), "first")
    held = (await board.claim("a1", ["work"], 3)).tasks
    await registry.register(AgentCard(name="a1", capabilities=("work",)), "second")
    after = {t.id: (t.state, t.owner, t.attempts) for t in [await board.get(h.id) for h in held]}
    assert after == {"t-1": ("open", None, 1), "t-2": ("open", None, 1), "t-3": ("failed", "a1", 1)}
    detail = "owner a1 restarted (instance second registered)"
    assert (await _history(board, "t-1"))[-1] == ("expired", detail)
    assert (await _history(board, "t-3"))[-1] == ("failed", f"{detail} on attempt 1 of 1")
    assert await board.owned("a1") == set()


async def test_a_sweep_reaps_only_registered_instances_whose_named_connections_are_gone(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    registry = Registry(redis, settings)
    keys = Keys(settings.name)
    for n in range(3):
        await board.create(TaskSpec(kind="work", title=f"job {n}"))
    live = named(redis, keys.connection("i-live"))
    try:
        await live.ping()  # its connection is open, named
        for agent, instance, connection in (("alive", "i-live", keys.connection("i-live")),
                                            ("dead", "i-dead", keys.connection("i-dead")),
                                            ("unnamed", "i-old", "")):
            await registry.register(AgentCard(name=agent, capabilities=("work",)), instance, connection=connection)
            await board.claim(agent, ["work"], 1)
        presence = Presence(redis, settings, recheck_s=0.05)
        assert await presence.sweep(force=True) == ["dead"]
        assert await presence.sweep(force=True) == []  # gone already: nothing more to do
    finally:
        await live.aclose()
    assert [await board.owned(a) for a in ("alive", "dead", "unnamed")] == [{"t-1"}, set(), {"t-3"}]
    assert (await board.get("t-2")).state == "open"
    liveness = {a.card.name: a.liveness for a in await registry.all()}
    assert liveness == {"alive": "alive", "dead": "gone", "unnamed": "alive"}


async def test_only_one_process_sweeps_a_swarm_per_second(redis: Redis, settings: Settings) -> None:
    registry = Registry(redis, settings)
    await registry.register(AgentCard(name="dead", capabilities=("work",)), "i-dead",
                            connection=Keys(settings.name).connection("i-dead"))
    first, second = Presence(redis, settings, recheck_s=0), Presence(redis, settings, recheck_s=0)
    assert await first.sweep() == ["dead"]
    await registry.register(AgentCard(name="dead", capabilities=("work",)), "i-dead2",
                            connection=Keys(settings.name).connection("i-dead2"))
    assert await second.sweep() == []  # the lock is taken for this second
    assert await second.sweep(force=True) == ["dead"]
