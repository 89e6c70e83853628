"""The idle hand-off (PROTOCOL.md 7.12): an agent whose claim came back short waits on its handoff
list, and whatever makes a task ready claims it for that agent in the same step: one hop, never two
owners, nothing lost when the agent stops waiting, leaves or dies."""

from __future__ import annotations

import functools
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.connection import client
from swarm.errors import Forbidden
from swarm.identity import Identities
from swarm.keys import Keys
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from tests.helpers import eventually, running


async def idle(redis: Redis, settings: Settings, name: str, caps: tuple[str, ...] = ("work",), slots: int = 1,
               wait_s: float = 5.0) -> Board:
    """`name` registered, with nothing to claim: it now waits for a hand-off of `slots` tasks."""
    await Registry(redis, settings).register(AgentCard(name=name, capabilities=caps), f"{name}-i1")
    board = Board(redis, settings)
    claimed = await board.claim(name, caps, slots, wait_s=wait_s)
    assert claimed.tasks == []
    return board


async def handed(redis: Redis, settings: Settings, name: str) -> list[str]:
    """The ids waiting on `name`'s handoff list (not popped)."""
    return [Task.from_redis(json.loads(raw)).id for raw in await redis.lrange(Keys(settings.name).handoff(name), 0, -1)]


async def test_an_idle_agent_gets_a_created_task_claimed_for_it_in_the_create_call(
    redis: Redis, settings: Settings
) -> None:
    board = await idle(redis, settings, "a1")
    task, created = await board.create(TaskSpec(kind="work", title="one hop"))
    assert created
    assert (task.state, task.owner, task.token, task.attempts) == ("running", "a1", 1, 1)
    with anyio.fail_after(2):
        popped = await board.handoff("a1", 10, wait_s=1.0)
    assert [(t.id, t.state, t.owner, t.token) for t in popped] == [(task.id, "running", "a1", 1)]
    assert popped[0].lease_until == task.lease_until > 0
    history = await board.history(task.id)
    assert [(e.body.event, e.body.owner) for e in history] == [("created", None), ("claimed", "a1")]
    assert history[1].id == f"{history[0].id}.2"  # claimed by the create call itself
    assert await board.ready() == []
    assert await board.owned("a1") == {task.id}
    # One task per announced slot: the agent stopped waiting, the next task waits in the queue.
    second, _ = await board.create(TaskSpec(kind="work", title="no one waits"))
    assert second.state == "open"
    assert [t.id for t in await board.ready()] == [second.id]


async def test_many_idle_agents_and_creators_run_every_task_exactly_once(redis: Redis, settings: Settings) -> None:
    fast = settings.model_copy(update={"lease_s": 10.0, "heartbeat_s": 0.5})
    board = Board(redis, fast)
    runs: Counter[str] = Counter()

    async def handle(task: Task, ctx: Context) -> str:
        runs[task.id] += 1
        await anyio.sleep(random.random() * 0.01)
        return "ok"

    total, creators = 500, 5
    agents = [Agent(redis, fast, AgentCard(name=f"a{i}", capabilities=("work",), concurrency=1 + i % 3), handle,
                    prefetch=i % 2) for i in range(20)]

    async def create(n: int) -> None:
        for i in range(total // creators):
            if i % 10 == 0:  # half in batches of 5 (create_many), half one by one
                await board.create_many([TaskSpec(kind="work", title=f"c{n}-{i}-{j}") for j in range(5)])
            elif i % 10 > 4:
                await board.create(TaskSpec(kind="work", title=f"c{n}-{i}"))
            if random.random() < 0.2:
                await anyio.sleep(0.01)

    async with AsyncExitStack() as stack:
        for agent in agents:
            await stack.enter_async_context(running(agent))
        await anyio.sleep(0.3)  # every agent has claimed nothing and waits idle
        async with anyio.create_task_group() as tg:
            for n in range(creators):
                tg.start_soon(create, n)
        ids = [t.id for t in await board.tasks(limit=10_000)]
        assert len(ids) == total

        async def all_done() -> bool:
            return (await board.counts())["done"] == total

        await eventually(all_done, within=30)
    assert sorted(runs) == sorted(ids)
    assert set(runs.values()) == {1}
    handoffs = 0
    for task_id in ids:
        history = await board.history(task_id)
        events = [e.body.event for e in history]
        assert events == ["created", "claimed", "done"], (task_id, events)
        handoffs += history[1].id.startswith(history[0].id)
    assert handoffs > 0  # (most of them: the agents wait idle between bursts)


async def test_an_agent_whose_wait_lapsed_or_that_left_is_handed_nothing(redis: Redis, settings: Settings) -> None:
    board = await idle(redis, settings, "a1", wait_s=0.2)
    await anyio.sleep(0.3)  # its wait lapsed: killed, or cut off, before it claimed again
    late, _ = await board.create(TaskSpec(kind="work", title="after the wait"))
    assert late.state == "open"
    assert await handed(redis, settings, "a1") == []
    await idle(redis, settings, "a2", caps=("docs",))
    await Registry(redis, settings).deregister("a2", "a2-i1")  # left (or marked gone by a reaper)
    gone, _ = await board.create(TaskSpec(kind="docs", title="after it left"))
    assert gone.state == "open"
    assert await handed(redis, settings, "a2") == []
    assert [t.id for t in await board.ready()] == [late.id, gone.id]


async def test_only_what_the_agent_may_take_now_is_handed(redis: Redis, settings: Settings) -> None:
    board = await idle(redis, settings, "a1", caps=("docs",), slots=5)
    other, _ = await board.create(TaskSpec(kind="audit", title="not its capability"))
    later, _ = await board.create(TaskSpec(kind="docs", title="backing off", not_before=await board.now_ms() + 60_000))
    blocked, _ = await board.create(TaskSpec(kind="docs", title="waits on another", blocked_by=(other.id,)))
    await board.pause("docs")
    paused, _ = await board.create(TaskSpec(kind="docs", title="paused kind"))
    await board.resume("docs")
    await board.set_budget(1.0, "a1")
    await redis.hset(Keys(settings.name).spend, "agent:a1", "1.5")
    broke, _ = await board.create(TaskSpec(kind="docs", title="its budget is spent"))
    assert [t.state for t in (other, later, blocked, paused, broke)] == ["open"] * 5
    assert await handed(redis, settings, "a1") == []
    await redis.hdel(Keys(settings.name).spend, "agent:a1")
    # Its dependency done: the dependent becomes ready in that call, and is handed over in it.
    taken = (await board.claim("a2", ["audit"], 1)).tasks
    assert [t.id for t in taken] == [other.id]
    await board.complete(other.id, taken[0].token, "ok", agent="a2")
    assert await handed(redis, settings, "a1") == [blocked.id]


async def test_a_batch_hands_over_its_best_tasks_first(redis: Redis, settings: Settings) -> None:
    board = await idle(redis, settings, "a1", slots=2)
    made = await board.create_many([TaskSpec(kind="work", title=f"p{p}", priority=p) for p in (1, 5, 9, 3)])
    ids = [task_id for task_id, _ in made]
    assert await handed(redis, settings, "a1") == [ids[2], ids[1]]  # priority 9, then 5
    assert [t.id for t in await board.ready()] == [ids[3], ids[0]]


async def test_a_claim_or_settle_returns_what_was_handed_and_not_popped(redis: Redis, settings: Settings) -> None:
    board = await idle(redis, settings, "a1", slots=3)
    first, _ = await board.create(TaskSpec(kind="work", title="handed"))
    waiting, _ = await board.create(TaskSpec(kind="work", title="handed too"))
    claimed = await board.claim("a1", ["work"], 1)  # stopped waiting: claims instead of popping
    assert [t.id for t in claimed.tasks] == [first.id, waiting.id]  # its own already, both
    assert await handed(redis, settings, "a1") == []
    third, _ = await board.create(TaskSpec(kind="work", title="not handed: a1 stopped waiting"))
    assert third.state == "open"
    # A settle does the same, and claims the rest of the freed slots from the queue.
    await board.claim("a1", ["work"], 1, wait_s=5.0)  # takes `third`; waits for nothing more (got 1 of 1)
    assert await handed(redis, settings, "a1") == []
    await board.claim("a1", ["work"], 2, wait_s=5.0)  # nothing ready: waits for 2
    fourth, _ = await board.create(TaskSpec(kind="work", title="handed while busy"))
    fifth, _ = await board.create(TaskSpec(kind="work", title="handed while busy, too"))
    sixth, _ = await board.create(TaskSpec(kind="work", title="queued"))
    assert (fourth.state, fifth.state, sixth.state) == ("running", "running", "open")
    done, claimed = await board.settle("a1", [(first.id, 1, "ok")], claim=3)
    assert [d.error for d in done] == [None]
    assert [t.id for t in claimed.tasks] == [fourth.id, fifth.id, sixth.id]
    assert all(t.owner == "a1" and t.state == "running" for t in claimed.tasks)


async def test_a_stale_hand_over_is_never_run(redis: Redis, settings: Settings) -> None:
    board = await idle(redis, settings, "a1", slots=2)
    task, _ = await board.create(TaskSpec(kind="work", title="cancelled before it was popped"))
    await board.cancel(task.id, "changed my mind")
    assert (await board.claim("a1", ["work"], 2)).tasks == []
    # A new instance of the name takes back what an earlier one was handed and drops its list.
    await idle(redis, settings, "a1")
    again, _ = await board.create(TaskSpec(kind="work", title="handed to the old instance"))
    moved = await Board(redis, settings).register("a1", "a1-i2", AgentCard(name="a1").model_dump_json())
    assert moved == [again.id]
    assert await handed(redis, settings, "a1") == []
    assert (await board.get(again.id)).state == "open"


async def test_a_stopping_agent_gives_back_what_was_handed_and_not_popped(redis: Redis, settings: Settings) -> None:
    fast = settings.model_copy(update={"lease_s": 10.0, "heartbeat_s": 0.1})
    board = Board(redis, fast)

    async def handle(task: Task, ctx: Context) -> str:
        raise AssertionError("never runs: nothing is popped")

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",)), handle)
    waits = 0

    async def not_popping(until: float) -> None:  # a stop that lands before the agent popped
        nonlocal waits
        waits += 1
        await anyio.sleep_forever()

    agent._wait_handoff = not_popping  # type: ignore[method-assign]
    async def waiting() -> bool:
        return waits > 0

    async with running(agent):
        await eventually(waiting)
        task, _ = await board.create(TaskSpec(kind="work", title="handed at the last moment"))
        assert (task.state, task.owner) == ("running", "a1")
    released = await board.get(task.id)
    assert (released.state, released.owner, released.attempts) == ("open", None, 0)
    assert [e.body.event for e in await board.history(task.id)] == ["created", "claimed", "released"]
    assert await handed(redis, fast, "a1") == []


async def test_an_idle_agent_process_picks_up_a_new_task_in_one_hop(redis: Redis, settings: Settings) -> None:
    fast = settings.model_copy(update={"lease_s": 10.0, "heartbeat_s": 0.5})
    board = Board(redis, fast)
    ran: list[str] = []

    async def handle(task: Task, ctx: Context) -> str:
        ran.append(task.id)
        return "ok"

    agent = Agent(redis, fast, AgentCard(name="a1", capabilities=("work",), concurrency=2), handle)
    async with running(agent):
        await eventually(lambda: redis.zscore(Keys(fast.name).idle_until, "a1"))
        for n in range(3):
            task, _ = await board.create(TaskSpec(kind="work", title=f"t{n}"))
            assert task.owner == "a1"  # claimed for it by the create call
            await eventually(functools.partial(_done, board, task.id))
            await eventually(lambda: redis.zscore(Keys(fast.name).idle_until, "a1"))
    assert len(ran) == 3


async def _done(board: Board, task_id: str) -> bool:
    return (await board.get(task_id)).state == "done"


@pytest.fixture
async def alice(redis: Redis, settings: Settings) -> AsyncIterator[Redis]:
    """A connection as alice, an agent's ACL user (removed afterwards)."""
    if os.environ.get("SWARM_TEST_CLUSTER_URL"):
        pytest.skip("not on a cluster: ACL users are made on one node (see test_identity.py)")
    made = Identities(redis, Keys(settings.name))
    password = await made.add("alice", "agent")
    conn = client(settings.redis_url or "", settings.model_copy(
        update={"user": "alice", "password": SecretStr(password), "connect_retries": 0}))
    try:
        yield conn
    finally:
        await conn.aclose()
        await made.remove("alice")


async def test_under_acl_users_an_agent_waits_only_as_itself(alice: Redis, redis: Redis, settings: Settings) -> None:
    for name in ("alice", "bob"):
        await Registry(redis, settings).register(AgentCard(name=name, capabilities=("work",)), f"{name}-i1")
    board = Board(alice, settings)
    with pytest.raises(Forbidden) as refused:
        await board.claim("bob", ["work"], 1, wait_s=5.0)
    assert str(refused.value).startswith("this Redis user may not act as bob;")
    assert await redis.zscore(Keys(settings.name).idle_until, "bob") is None
    assert (await board.claim("alice", ["work"], 1, wait_s=5.0)).tasks == []
    task, _ = await Board(redis, settings).create(TaskSpec(kind="work", title="for alice"))
    with anyio.fail_after(2):
        popped = await board.handoff("alice", 1, wait_s=1.0)  # its user may pop its own list
    assert [t.id for t in popped] == [task.id]
