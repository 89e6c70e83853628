"""The captain against the real server: one leader at a time (and a standby that takes over from a
SIGKILLed leader), fenced assignment, matching by capability, capacity and affinity, and `why`."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from redis.asyncio import Redis

from swarm.board import Board, Ready, Task, TaskSpec
from swarm.captain import Captain, Slot, plan
from swarm.connection import connect
from swarm.errors import NotLeader
from swarm.keys import FIELD
from swarm.protocol import Assignment, decode, now_ms
from swarm.registry import AgentCard, AgentInfo, Registry
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CAPTAIN_PROC = ROOT / "tests" / "procs" / "captain_proc.py"


def spec(title: str = "job", *, kind: str = "audit", **fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"kind": kind, "title": title, **fields})


async def join(redis: Redis, settings: Settings, name: str, *caps: str, concurrency: int = 1) -> AgentCard:
    """Register an agent (its heartbeat is fresh, so it is alive)."""
    card = AgentCard(name=name, capabilities=caps, concurrency=concurrency)
    return await Registry(redis, settings).register(card, instance=f"{name}-i1")


async def inbox(redis: Redis, board: Board, agent: str) -> list[Assignment]:
    out: list[Assignment] = []
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox(agent)))
    for _, fields in rows:
        msg = decode(fields[FIELD.encode()])
        assert isinstance(msg, Assignment)
        out.append(msg)
    return out


# --- plan(): pure matching -----------------------------------------------------------------------


def task(n: int, *caps: str, files: tuple[str, ...] = ()) -> Task:
    return Task(id=f"t-{n}", kind=caps[0] if caps else "audit", title=f"task {n}", state="open",
                caps=caps or ("audit",), files=files)


def slot(name: str, *caps: str, concurrency: int = 1, load: int = 0, affinity: tuple[str, ...] = ()) -> Slot:
    info = AgentInfo(card=AgentCard(name=name, capabilities=caps, concurrency=concurrency), last_seen=1,
                     liveness="alive")
    return Slot(info=info, load=load, affinity=frozenset(affinity))


def names(pairs: list[tuple[Task, str]]) -> list[tuple[str, str]]:
    return [(t.id, agent) for t, agent in pairs]


def test_plan_matches_capabilities() -> None:
    tasks = [task(1, "docs"), task(2, "audit"), task(3, "audit", "docs"), task(4, "deploy")]
    slots = [slot("auditor", "audit", concurrency=5), slot("writer", "docs", concurrency=5)]
    assert names(plan(tasks, slots)) == [("t-1", "writer"), ("t-2", "auditor")]
    anyone = [*slots, slot("generalist", "*", concurrency=5)]
    assert names(plan(tasks, anyone)) == [("t-1", "generalist"), ("t-2", "auditor"), ("t-3", "generalist"),
                                         ("t-4", "generalist")]


def test_plan_respects_each_agents_capacity() -> None:
    tasks = [task(n) for n in range(1, 7)]
    slots = [slot("a1", "audit", concurrency=2, load=1), slot("a2", "audit", concurrency=3)]
    # a1 has room for one more, a2 for three: two tasks stay unassigned, and work spreads by relative load.
    assert names(plan(tasks, slots)) == [("t-1", "a2"), ("t-2", "a2"), ("t-3", "a1"), ("t-4", "a2")]
    assert plan(tasks, [slot("full", "audit", concurrency=2, load=2)]) == []
    assert plan(tasks, []) == []


def test_plan_prefers_affinity_over_load_and_name() -> None:
    tasks = [task(1, files=("src/app.py",)), task(2, files=("docs/x.md",)), task(3, files=("src/app.py", "b.py"))]
    slots = [
        slot("a1", "audit", concurrency=4),
        slot("z9", "audit", concurrency=4, load=2, affinity=("src/app.py", "b.py")),
    ]
    assert names(plan(tasks, slots)) == [("t-1", "z9"), ("t-2", "a1"), ("t-3", "z9")]


def test_plan_is_deterministic() -> None:
    tasks = [task(n, files=(f"f{n % 3}.py",)) for n in range(1, 13)]
    slots = [slot(f"a{i}", "audit", concurrency=1 + i % 3, load=i % 2, affinity=(f"f{i % 3}.py",)) for i in range(5)]
    first = names(plan(tasks, slots))
    assert len(first) == sum(s.info.card.concurrency - s.load for s in slots)
    for order in itertools.islice(itertools.permutations(slots), 30):
        assert names(plan(tasks, list(order))) == first


# --- leadership --------------------------------------------------------------------------------


async def test_one_captain_leads(redis: Redis, settings: Settings) -> None:
    captains = [Captain(redis, settings) for _ in range(8)]
    epochs: dict[str, int] = {}

    async def elect(c: Captain) -> None:
        epochs[c.instance] = await c.elect()

    async with anyio.create_task_group() as tg:
        for c in captains:
            tg.start_soon(elect, c)
    leaders = [c for c in captains if epochs[c.instance]]
    assert len(leaders) == 1
    leader = leaders[0]
    assert (leader.epoch, leader.leading) == (1, True)
    assert [await c.elect() for c in captains] == [1 if c is leader else 0 for c in captains]  # renewing
    assert await redis.get(leader.keys.leader) == f"1:{leader.instance}".encode()

    await leader.resign()
    assert not leader.leading
    follower = captains[1] if leader is captains[0] else captains[0]
    assert await follower.elect() == 2
    assert await leader.elect() == 0
    await leader.resign()  # not ours: the follower keeps the lease
    assert await follower.elect() == 2


async def test_a_deposed_captain_cannot_assign(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    await join(redis, settings, "w1", "audit", concurrency=5)
    first, second = Captain(redis, settings), Captain(redis, settings)
    assert await first.elect() == 1
    await redis.delete(first.keys.leader)  # its lease ran out while it was not looking
    assert await second.elect() == 2
    task, _ = await board.create(spec())

    with pytest.raises(NotLeader) as exc:
        await board.assign(task.id, "w1", epoch=1)
    assert str(exc.value) == "captain epoch 1 no longer holds the leader lease; standing by"
    assert first.leading  # it has not noticed yet...
    await first.tick()  # ...and the assign script refuses it anyway
    assert (first.leading, first.assigned) == (False, 0)
    assert (await board.get(task.id)).state == "open"
    await second.tick()
    assert (second.assigned, (await board.get(task.id)).owner) == (1, "w1")

    await second.resign()
    other, _ = await board.create(spec("nobody leads"))
    with pytest.raises(NotLeader) as exc:
        await board.assign(other.id, "w1", epoch=2)
    assert str(exc.value) == "captain epoch 2 no longer holds the leader lease; standing by"


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` every 5 ms until it is true (the caller bounds it with `fail_after`)."""
    while True:
        if await check():
            return
        await anyio.sleep(0.005)


async def assigned(board: Board, task_id: str) -> bool:
    return (await board.get(task_id)).state != "open"


async def counted(captain: Captain) -> bool:
    return captain.assigned >= 1


async def _read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 4096)).decode()


async def test_standby_takes_over_from_a_sigkilled_leader(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    lease = 1.0
    fast = settings.model_copy(update={"leader_lease_s": lease, "heartbeat_s": 30.0})
    assert fast.redis_url is not None
    board = Board(redis, fast)
    await join(redis, fast, "w1", "audit", concurrency=10)
    env = {**os.environ, "SWARM_REDIS_URL": fast.redis_url, "SWARM_NAME": fast.name,
           "SWARM_LEADER_LEASE_S": str(lease), "SWARM_HEARTBEAT_S": "30", "SWARM_HOME": str(tmp_path)}
    standby_redis = await connect(fast.redis_url, fast)
    standby = Captain(standby_redis, fast)
    with (tmp_path / "captain.log").open("wb") as errors:
        proc = await anyio.open_process([sys.executable, str(CAPTAIN_PROC)], env=env, cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=errors)
    try:
        assert proc.stdout is not None
        with anyio.fail_after(20):
            line = await _read_line(BufferedByteReceiveStream(proc.stdout))
        match = re.fullmatch(r"leading (\d+) (\S+)", line)
        assert match, line
        old_epoch = int(match[1])
        # Out of step with the leader's renewals, so a standby that only polled once a period would be
        # seen taking over late.
        await anyio.sleep(lease / 5)
        async with anyio.create_task_group() as tg:
            await tg.start(standby.run)
            # The process leads and assigns; the in-process captain stands by.
            before, _ = await board.create(spec("before the kill"))
            with anyio.fail_after(5):
                await until(lambda: assigned(board, before.id))
            assert not standby.leading
            assert await Captain(redis, fast).elect() == 0

            left = await redis.pttl(board.keys.leader) / 1000  # what the dead leader's lease still has
            started = time.monotonic()
            proc.kill()
            after, _ = await board.create(spec("after the kill"))
            with anyio.fail_after(10):
                await until(lambda: assigned(board, after.id))
            took = time.monotonic() - started
            with anyio.fail_after(5):  # the script ran; the counter follows when its reply arrives
                await until(lambda: counted(standby))
            assert (standby.leading, standby.epoch, standby.assigned) == (True, old_epoch + 1, 1)
            tg.cancel_scope.cancel()
        # Within a lease of the kill: the standby takes over as soon as the dead leader's lease runs out.
        assert took < lease + 0.5, f"standby assigned {took:.3f}s after the leader was killed"
        assert took < left + 0.15, f"standby assigned {took:.3f}s after the kill; the lease had {left:.3f}s left"
        assert not standby.leading  # resigned on the way out
        assert await redis.get(board.keys.leader) is None
        got = await inbox(redis, board, "w1")
        assert [(m.body.task_id, m.body.token, m.body.instance) for m in got] == [
            (before.id, 1, "w1-i1"), (after.id, 1, "w1-i1")]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()
        await standby_redis.aclose()
    assert proc.returncode == -9


# --- assigning ---------------------------------------------------------------------------------


async def test_tick_assigns_by_capability_capacity_and_affinity(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    captain = Captain(redis, settings)
    await join(redis, settings, "a1", "audit", concurrency=2)
    await join(redis, settings, "w1", "docs")
    await join(redis, settings, "z9", "audit", concurrency=2)
    # z9 once finished work on src/app.py: it gets the next task on that file, though a1 sorts first.
    warmup, _ = await board.create(spec("warm-up", files=("src/app.py",)))
    done = await board.assign(warmup.id, "z9")
    await board.complete(warmup.id, done.token, agent=done.owner or "")
    assert await board.affinity("z9") == {"src/app.py"}

    app, _ = await board.create(spec("audit app", files=("src/app.py",)))
    audits = [(await board.create(spec(f"audit {n}", files=(f"src/{n}.py",))))[0] for n in range(4)]
    docs, _ = await board.create(spec("docs", kind="docs"))
    deploy, _ = await board.create(spec("deploy", kind="deploy"))
    assert await captain.elect() == 1
    await captain.tick()

    owners = {t.id: t.owner for t in await board.tasks()}
    assert owners[app.id] == "z9"
    assert owners[docs.id] == "w1"
    assert owners[deploy.id] is None
    assert [owners[t.id] for t in audits] == ["a1", "a1", "z9", None]
    assert captain.assigned == 5
    assert {a: len(await board.owned(a)) for a in ("a1", "w1", "z9")} == {"a1": 2, "w1": 1, "z9": 2}

    # A human's assign: one task, `assigned` (the agent starts it), no instance named. The captain's
    # round: one message for all of z9's tasks, handed out already running.
    human, round_ = await inbox(redis, board, "z9")
    assert (human.body.task_id, human.body.token, human.body.task_kind, human.body.title) == (
        warmup.id, 1, "audit", "warm-up")
    assert (human.body.instance, human.body.state, human.body.more) == (None, None, None)
    assert (round_.to, round_.sender, round_.body.instance, round_.body.state) == ("z9", "board", "z9-i1", "running")
    first = round_.body
    assert [(first.task_id, first.token, first.task_kind, first.title)] + [
        (m.task_id, m.token, m.task_kind, m.title) for m in first.more or ()] == [
        (app.id, 1, "audit", "audit app"), (audits[2].id, 1, "audit", "audit 2")]
    assert round_.body.refs() == [(app.id, 1), (audits[2].id, 1)]
    assert {(await board.get(t)).state for t in (app.id, audits[2].id)} == {"running"}
    assert [e.body.event for e in await board.history(app.id)] == ["created", "assigned"]
    [w1_round] = await inbox(redis, board, "w1")
    assert (w1_round.body.task_id, w1_round.body.state, w1_round.body.more) == (docs.id, "running", None)

    # Nothing changes on a second tick: everyone capable is full.
    await captain.tick()
    assert captain.assigned == 5
    # A finished task frees a slot; the next tick fills it.
    running = await board.get(audits[0].id)
    await board.complete(running.id, running.token, agent=running.owner or "")
    await captain.tick()
    assert (await board.get(audits[3].id)).owner == "a1"


async def test_tick_reclaims_expired_leases_and_reassigns(redis: Redis, settings: Settings) -> None:
    fast = settings.model_copy(update={"lease_s": 0.2})
    board = Board(redis, fast)
    captain = Captain(redis, fast)
    await join(redis, fast, "w1", "audit")
    await join(redis, fast, "w2", "audit")
    task, _ = await board.create(spec())
    assert await captain.elect() == 1
    wake_at = await captain.tick()
    first = await board.get(task.id)
    assert first.owner == "w1"
    assert wake_at is not None
    assert first.lease_until <= wake_at <= first.lease_until + 50  # it sleeps until the lease runs out
    assert await captain.tick() == first.lease_until  # a later tick reads the expiry off the board
    await Registry(redis, fast).deregister("w1", "w1-i1")  # w1 died
    await anyio.sleep(0.3)
    assert await Registry(redis, fast).heartbeat("w2", "w2-i1")  # w2 lives: liveness is judged by the lease
    await captain.tick()
    second = await board.get(task.id)
    assert (second.owner, second.token, second.attempts) == ("w2", 3, 2)
    assert [e.body.event for e in await board.history(task.id)] == ["created", "assigned", "expired", "assigned"]



async def test_an_owner_whose_lease_ran_out_is_not_handed_the_task_again(redis: Redis, settings: Settings) -> None:
    # w1 keeps its registry heartbeat but stopped extending its lease (wedged): alive by the
    # registry, yet it must not get the task straight back; w2 (also alive, same load) gets it.
    fast = settings.model_copy(update={"lease_s": 0.6, "heartbeat_s": 0.2})
    board, registry = Board(redis, fast), Registry(redis, fast)
    captain = Captain(redis, fast)
    await join(redis, fast, "w1", "audit")
    await join(redis, fast, "w2", "audit")
    task, _ = await board.create(spec())
    assert await captain.elect() == 1
    await captain.tick()
    assert (await board.get(task.id)).owner == "w1"
    await anyio.sleep(0.65)
    for name in ("w1", "w2"):
        assert await registry.heartbeat(name, f"{name}-i1")
    _, _ = await board.reclaim_expired()
    assert {a.card.name: a.liveness for a in await registry.all()} == {"w1": "gone", "w2": "alive"}
    await captain.tick()
    again = await board.get(task.id)
    assert (again.owner, again.attempts) == ("w2", 2)
    assert await registry.heartbeat("w1", "w1-i1")  # its next heartbeat brings it back
    assert {a.card.name: a.liveness for a in await registry.all()}["w1"] == "alive"

# --- why -------------------------------------------------------------------------------------


async def test_why_explains_every_case(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings.model_copy(update={"retry_backoff_s": 30}))
    captain = Captain(redis, settings)

    finished, _ = await board.create(spec("finished"))
    owner = await board.claim_next("w", ["audit"])
    assert owner is not None
    await board.complete(finished.id, owner.token, "all good", agent=owner.owner or "")
    assert await captain.why(finished.id) == f"{finished.id} is done: all good; terminal, it never changes."
    dropped, _ = await board.create(spec("dropped"))
    await board.cancel(dropped.id, "")
    assert await captain.why(dropped.id) == f"{dropped.id} is cancelled; terminal, it never changes."

    held, _ = await board.create(spec("held"))
    holder = await board.assign(held.id, "w")
    assert re.fullmatch(
        rf"{held.id} is assigned by w \(token 1, attempt 1 of 3, lease (29\.\d|30\.0)s left\)\.",
        await captain.why(held.id),
    )
    await board.block(held.id, holder.token, "needs credentials", agent=holder.owner or "")
    assert await captain.why(held.id) == (
        f"{held.id} is blocked: needs credentials; `swarm task unblock {held.id}` reopens it.")
    await board.cancel(held.id)

    root, _ = await board.create(spec("root"))
    leaf, _ = await board.create(spec("leaf", blocked_by=(root.id, finished.id)))
    assert await captain.why(leaf.id) == f"{leaf.id} is open but waits on blocked-by {root.id} (open)."
    await board.cancel(root.id)
    assert await captain.why(leaf.id) == (
        f"{leaf.id} is open but waits on blocked-by {root.id} (cancelled); {root.id} will not finish unless "
        f"retried: `swarm task retry {root.id}`.")
    await board.retry(root.id)  # ...and once it is done, the leaf is ready
    rerun = await board.claim_next("w", ["audit"])
    assert rerun is not None
    assert rerun.id == root.id
    await board.complete(root.id, rerun.token, agent="w")
    assert await board.ready() == [await board.get(leaf.id)]
    await board.cancel(leaf.id)

    flaky, _ = await board.create(spec("flaky"))
    got = await board.claim_next("w", ["audit"])
    assert got is not None
    await board.fail(flaky.id, got.token, "timeout talking to the API", agent=got.owner or "")
    assert re.fullmatch(rf"{flaky.id} is open, backing off (29\.\d|30\.0)s after a failure: timeout talking to the "
                        r"API\.", await captain.why(flaky.id))
    await board.cancel(flaky.id)

    ready, _ = await board.create(spec("write docs", kind="docs"))
    assert await captain.why(ready.id) == (
        f"{ready.id} is ready but no live agent can do [docs]; live agents: none. "
        "Start one with `swarm agent run --name NAME --can docs`.")
    await join(redis, settings, "a1", "audit", "review")
    assert await captain.why(ready.id) == (
        f"{ready.id} is ready but no live agent can do [docs]; live agents: a1 (audit,review). "
        "Start one with `swarm agent run --name NAME --can docs`.")
    await join(redis, settings, "d1", "docs")
    await join(redis, settings, "d2", "docs", concurrency=2)
    busy1, _ = await board.create(spec("busy 1", kind="docs", priority=9))
    busy2, _ = await board.create(spec("busy 2", kind="docs", priority=9))
    busy3, _ = await board.create(spec("busy 3", kind="docs", priority=9))
    await board.assign(busy1.id, "d1")
    await board.assign(busy2.id, "d2")
    assert await captain.why(ready.id) == (
        f"{ready.id} is ready and d2 could take it, but no captain leads: start one with `swarm captain run`.")
    assert await captain.elect() == 1
    assert await captain.why(ready.id) == (
        f"{ready.id} is ready (position 2 in the queue); the captain assigns it next.")
    await board.assign(busy3.id, "d2")
    assert await captain.why(ready.id) == f"{ready.id} is ready; every capable agent is at capacity (d1 1/1, d2 2/2)."
    # A gone agent does not count as capable.
    await Registry(redis, settings).deregister("d1", "d1-i1")
    assert await captain.why(ready.id) == f"{ready.id} is ready; every capable agent is at capacity (d2 2/2)."


async def test_a_foreign_card_with_fields_of_its_own_does_not_stop_the_captain(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    captain = Captain(redis, settings)
    card = {"name": "node-1", "capabilities": ["audit"], "concurrency": 1, "lang": "node", "instance": "n1"}
    await redis.hset(board.keys.agents, "node-1", json.dumps(card))
    await redis.zadd(board.keys.agent_seen, {"node-1": now_ms()})
    task, _ = await board.create(spec())
    assert await captain.elect() == 1
    await captain.tick()
    assert (await board.get(task.id)).owner == "node-1"


async def test_the_view_reads_only_as_many_ready_tasks_as_free_slots_could_take(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    for n in range(100):
        await board.create(spec(f"job {n}"))
    assert (await board.view(0, 64, 6_000)).tasks == []  # nobody to give them to
    await join(redis, settings, "w1", "audit", concurrency=2)
    view = await board.view(0, 64, 6_000)
    assert view.tasks == [Ready("t-1", ("audit",), ()), Ready("t-2", ("audit",), ())]  # w1's two free slots
    assert view.scanned == 2
    assert [(a.name, a.load) for a in view.agents] == [("w1", 0)]
    assert view.more  # and more lie behind them


async def test_the_view_reads_past_tasks_no_free_agent_can_do(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    deploys = [(await board.create(spec(f"deploy {n}", kind="deploy")))[0] for n in range(3)]
    docs = [(await board.create(spec(f"docs {n}", kind="docs", files=(f"d{n}.md",))))[0] for n in range(2)]
    await board.create(spec("audit"))  # a paused kind: read past
    await join(redis, settings, "w1", "docs", concurrency=5)
    await join(redis, settings, "busy", "deploy", concurrency=1)
    deployed = await board.claim("busy", ["deploy"], 1)  # busy is full: nobody free can deploy
    await board.pause("audit")
    view = await board.view(0, 64, 6_000)
    assert [t.id for t in view.tasks] == [t.id for t in docs]
    assert [t.files for t in view.tasks] == [("d0.md",), ("d1.md",)]
    assert (view.scanned, view.more) == (5, False)  # two deploys read past, then both docs and the paused audit
    assert [t.id for t in deployed.tasks] == [deploys[0].id]


async def test_a_ready_task_deep_behind_work_nobody_free_can_do_is_still_assigned(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    captain = Captain(redis, settings)
    for n in range(40):  # ahead in the queue: more urgent, but nobody free can do them
        await board.create(spec(f"deploy {n}", kind="deploy", priority=9))
    docs, _ = await board.create(spec("write the docs", kind="docs"))
    await join(redis, settings, "w1", "docs")  # one free slot: a page of 4 x 1 + 16 = 20 tasks
    assert await captain.elect() == 1
    await captain.tick()
    assert (await board.get(docs.id)).owner == "w1"
