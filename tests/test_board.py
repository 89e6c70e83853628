"""The task board's invariants, against the real server: one owner per task, fenced stale owners,
retry limits, terminal states, idempotent create, dependencies, claim order, and the audit log."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import pytest
from redis.asyncio import Redis

from swarm.board import Board, Task, TaskSpec
from swarm.connection import connect, text
from swarm.errors import IllegalTransition, NotReady, StaleToken, TaskNotFound
from swarm.keys import FIELD
from swarm.protocol import Assignment, TaskEvent, decode
from swarm.settings import Settings


def spec(title: str = "job", *, kind: str = "audit", **fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"kind": kind, "title": title, **fields})


def quick(settings: Settings, **changes: object) -> Settings:
    """The test settings with shorter leases / backoffs for one test."""
    return settings.model_copy(update=changes)


def owner_actions(board: Board, task_id: str, token: int, agent: str = "w") -> list[Callable[[], Awaitable[Task]]]:
    """Every transition an owner can make (as `agent`), each ready to be tried."""
    return [
        lambda: board.start(task_id, token, agent=agent), lambda: board.heartbeat(task_id, token, agent=agent),
        lambda: board.complete(task_id, token, agent=agent), lambda: board.fail(task_id, token, "again", agent=agent),
        lambda: board.release(task_id, token, agent=agent), lambda: board.block(task_id, token, "why", agent=agent),
    ]


async def events(redis: Redis, board: Board) -> list[TaskEvent]:
    """Every entry of the board-event stream, decoded (a decode failure fails the test)."""
    out: list[TaskEvent] = []
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.events))
    for _, fields in rows:
        msg = decode(fields[FIELD.encode()])
        assert isinstance(msg, TaskEvent)
        out.append(msg)
    return out


async def test_sixteen_claimers_take_every_task_exactly_once(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    created = [await board.create(spec(f"task {i}")) for i in range(1000)]
    ids = {task.id for task, fresh in created}
    assert len(ids) == 1000
    assert all(fresh for _, fresh in created)

    claimed: list[list[str]] = [[] for _ in range(16)]

    async def claimer(n: int) -> None:
        own = await connect(settings.redis_url or "", settings)
        try:
            mine = Board(own, settings)
            while (task := await mine.claim_next(f"w{n}", ["audit"])) is not None:
                assert task.owner == f"w{n}"
                assert task.state == "running"
                claimed[n].append(task.id)
        finally:
            await own.aclose()

    async with anyio.create_task_group() as tg:
        for n in range(16):
            tg.start_soon(claimer, n)

    everything = [task_id for batch in claimed for task_id in batch]
    assert len(everything) == 1000  # no task handed out twice
    assert set(everything) == ids  # none lost
    assert sum(1 for batch in claimed if batch) > 1  # the claimers really interleaved
    counts = await board.counts()
    assert counts == {"open": 0, "assigned": 0, "running": 1000, "blocked": 0, "done": 0, "failed": 0,
                      "cancelled": 0}
    assert await board.ready() == []
    owners = {n: await board.owned(f"w{n}") for n in range(16)}
    assert all(owners[n] == set(claimed[n]) for n in range(16))


async def test_a_worker_that_lost_its_lease_is_fenced_off(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=0.3))
    task, _ = await board.create(spec())
    slow = await board.claim_next("slow", ["audit"])
    assert slow is not None
    assert slow.token == 1
    await anyio.sleep(0.4)  # the worker stalls past its lease

    moved, _ = await board.reclaim_expired()
    assert moved == [task.id]
    again = await board.get(task.id)
    assert (again.state, again.owner, again.token, again.attempts) == ("open", None, 2, 1)
    fast = await board.claim_next("fast", ["audit"])
    assert fast is not None
    assert (fast.id, fast.owner, fast.token, fast.attempts) == (task.id, "fast", 3, 2)

    stale = f"token 1 for task {task.id} is stale: the task moved on since (it is running now); drop it"
    with pytest.raises(StaleToken) as exc:
        await board.heartbeat(task.id, slow.token, agent=slow.owner or "")
    assert str(exc.value) == stale
    with pytest.raises(StaleToken) as exc:
        await board.complete(task.id, slow.token, "late result", agent=slow.owner or "")
    assert str(exc.value) == stale

    done = await board.complete(task.id, fast.token, "on time", agent=fast.owner or "")
    assert (done.state, done.owner, done.result) == ("done", "fast", "on time")
    with pytest.raises(StaleToken) as exc:  # still refused once the task is finished
        await board.complete(task.id, slow.token, "late result", agent=slow.owner or "")
    assert str(exc.value) == f"token 1 for task {task.id} is stale: the task moved on since (it is done now); drop it"
    history = [e.body.event for e in await board.history(task.id)]
    assert history == ["created", "claimed", "expired", "claimed", "done"]
    assert history.count("done") == 1
    assert (await board.get(task.id)).result == "on time"


async def test_reassigned_worker_is_fenced_and_the_new_owner_completes_once(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=0.3))
    task, _ = await board.create(spec())
    first = await board.assign(task.id, "a1")
    await anyio.sleep(0.4)
    assert (await board.reclaim_expired())[0] == [task.id]
    second = await board.assign(task.id, "a2")
    assert (first.token, second.token) == (1, 3)
    with pytest.raises(StaleToken):
        await board.start(task.id, first.token, agent=first.owner or "")
    await board.start(task.id, second.token, agent=second.owner or "")
    await board.complete(task.id, second.token, agent=second.owner or "")
    assert [e.body.event for e in await board.history(task.id)] == [
        "created", "assigned", "expired", "assigned", "started", "done"]


async def test_retry_limit_fails_with_the_last_reason(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, retry_backoff_s=0))
    task, _ = await board.create(spec(max_attempts=2))
    one = await board.claim_next("w", ["audit"])
    assert one is not None
    retried = await board.fail(task.id, one.token, "flaky network", agent=one.owner or "")
    assert (retried.state, retried.owner, retried.attempts, retried.reason) == ("open", None, 1, "flaky network")
    two = await board.claim_next("w", ["audit"])
    assert two is not None
    assert two.attempts == 2
    failed = await board.fail(task.id, two.token, "disk full", agent=two.owner or "")
    assert (failed.state, failed.reason, failed.attempts) == ("failed", "disk full", 2)
    assert [e.body.event for e in await board.history(task.id)] == ["created", "claimed", "retry", "claimed",
                                                                      "failed"]
    assert (await board.history(task.id))[-1].body.detail == "disk full"
    assert await board.claim_next("w", ["audit"]) is None


async def test_fail_without_retry_and_backoff(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, retry_backoff_s=30))
    task, _ = await board.create(spec())
    owned = await board.claim_next("w", ["audit"])
    assert owned is not None
    backing = await board.fail(task.id, owned.token, "try later", agent=owned.owner or "")
    assert backing.state == "open"
    assert backing.not_before > backing.updated
    assert await board.ready() == []
    assert await board.claim_next("w", ["audit"]) is None  # backing off, not claimable
    with pytest.raises(NotReady) as exc:
        await board.assign(task.id, "w")
    assert str(exc.value) == f"task {task.id} is backing off until {backing.not_before} (ms) after a failure"

    other, _ = await board.create(spec("no retry"))
    got = await board.claim_next("w", ["audit"])
    assert got is not None
    assert got.id == other.id
    final = await board.fail(other.id, got.token, "bad input", retry=False, agent=got.owner or "")
    assert (final.state, final.reason, final.attempts) == ("failed", "bad input", 1)


async def test_lease_expiry_past_the_retry_limit_fails_the_task(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=0.2))
    task, _ = await board.create(spec(max_attempts=1))
    owned = await board.claim_next("w1", ["audit"])
    assert owned is not None
    await anyio.sleep(0.3)
    moved, wake = await board.reclaim_expired()
    assert (moved, wake) == ([task.id], None)
    failed = await board.get(task.id)
    assert (failed.state, failed.reason) == ("failed", "lease of w1 expired on attempt 1 of 1")
    assert await board.owned("w1") == set()
    with pytest.raises(StaleToken):
        await board.heartbeat(task.id, owned.token, agent=owned.owner or "")


async def test_terminal_states_reject_every_transition(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, retry_backoff_s=0))
    done, _ = await board.create(spec("done"))
    failed, _ = await board.create(spec("failed", max_attempts=1))
    cancelled, _ = await board.create(spec("cancelled"))
    d = await board.claim_next("w", ["audit"])
    f = await board.claim_next("w", ["audit"])
    c = await board.claim_next("w", ["audit"])
    assert d is not None
    assert f is not None
    assert c is not None
    await board.complete(done.id, d.token, "ok", agent=d.owner or "")
    await board.fail(failed.id, f.token, "broken", agent=f.owner or "")
    cancelled_task = await board.cancel(cancelled.id, "not needed")
    assert (cancelled_task.state, cancelled_task.reason, cancelled_task.token) == ("cancelled", "not needed", 2)

    for task, state, token in ((done, "done", d.token), (failed, "failed", f.token)):
        terminal = f"task {task.id} is {state}, a terminal state; it never changes again"
        with pytest.raises(IllegalTransition) as exc:
            await board.cancel(task.id)
        assert str(exc.value) == terminal
        with pytest.raises(IllegalTransition) as exc:
            await board.unblock(task.id)
        assert str(exc.value) == terminal
        with pytest.raises(IllegalTransition) as exc:
            await board.assign(task.id, "w2")
        assert str(exc.value) == f"task {task.id} is {state} by w, not open"
        with pytest.raises(IllegalTransition) as exc:
            await board.assign(task.id, "w2", force=True)
        assert str(exc.value) == f"task {task.id} is {state} by w, not open"
        # The last owner still holds the current token, so the state is what refuses it.
        owner_refusal = f"task {task.id} is {state}; only an assigned or running task can do that"
        for action in owner_actions(board, task.id, token):
            with pytest.raises(IllegalTransition) as exc:
                await action()
            assert str(exc.value) == owner_refusal

    # Cancelling fenced the owner's token: every owner action is a StaleToken.
    stale = f"token {c.token} for task {cancelled.id} is stale: the task moved on since (it is cancelled now); drop it"
    for action in owner_actions(board, cancelled.id, c.token):
        with pytest.raises(StaleToken) as stale_exc:
            await action()
        assert str(stale_exc.value) == stale
    with pytest.raises(IllegalTransition) as exc:
        await board.cancel(cancelled.id)
    assert str(exc.value) == f"task {cancelled.id} is cancelled, a terminal state; it never changes again"

    before = {t.id: t for t in await board.tasks()}
    await board.reclaim_expired()
    assert {t.id: t for t in await board.tasks()} == before
    assert await board.counts() == {"open": 0, "assigned": 0, "running": 0, "blocked": 0, "done": 1, "failed": 1,
                                    "cancelled": 1}


async def test_owner_transitions_and_their_refusals(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec())
    assigned = await board.assign(task.id, "w")
    with pytest.raises(StaleToken) as stale:
        await board.start(task.id, assigned.token + 1, agent=assigned.owner or "")
    assert str(stale.value) == (f"token 2 for task {task.id} was never issued: use the token your claim or "
                                "assignment gave you")  # and the right one is not given away
    running = await board.start(task.id, assigned.token, agent=assigned.owner or "")
    with pytest.raises(IllegalTransition) as exc:
        await board.start(task.id, running.token, agent=running.owner or "")
    assert str(exc.value) == f"task {task.id} is already running"
    with pytest.raises(IllegalTransition) as exc:
        await board.assign(task.id, "w2")
    assert str(exc.value) == f"task {task.id} is running by w, not open; use reassign to move it"
    with pytest.raises(IllegalTransition) as exc:
        await board.assign(task.id, "w", force=True)
    assert str(exc.value) == f"task {task.id} is already running by w"

    blocked = await board.block(task.id, running.token, "needs a human", agent=running.owner or "")
    assert (blocked.state, blocked.owner, blocked.reason) == ("blocked", None, "needs a human")
    assert await board.owned("w") == set()
    with pytest.raises(StaleToken):
        await board.heartbeat(task.id, running.token, agent=running.owner or "")
    with pytest.raises(IllegalTransition) as exc:
        await board.assign(task.id, "w")
    assert str(exc.value) == f"task {task.id} is blocked, not open"
    reopened = await board.unblock(task.id, "answered")
    assert reopened.state == "open"
    with pytest.raises(IllegalTransition) as exc:
        await board.unblock(task.id)
    assert str(exc.value) == f"task {task.id} is open, not blocked"

    again = await board.claim_next("w", ["audit"])
    assert again is not None
    released = await board.release(task.id, again.token, "shutting down", agent=again.owner or "")
    assert (released.state, released.attempts) == ("open", 1)  # a release does not count as an attempt
    with pytest.raises(TaskNotFound) as missing:
        await board.complete("t-999", 1, agent="w")
    assert str(missing.value) == "no task t-999 on this board; `swarm task list` shows the ids"
    with pytest.raises(TaskNotFound):
        await board.get("t-999")


async def test_reassign_moves_ownership_and_fences_the_old_owner(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec())
    old = await board.assign(task.id, "a1")
    new = await board.assign(task.id, "a2", force=True)
    assert (new.owner, new.token, new.state) == ("a2", 2, "assigned")
    assert (await board.owned("a1"), await board.owned("a2")) == (set(), {task.id})
    with pytest.raises(StaleToken):
        await board.start(task.id, old.token, agent=old.owner or "")
    assert (await board.history(task.id))[-1].body.detail == "from a1"


async def test_concurrent_creates_with_one_key_make_one_task(redis: Redis, settings: Settings) -> None:
    clients = [await connect(settings.redis_url or "", settings) for _ in range(5)]
    results: list[tuple[Task, bool]] = []

    async def create(n: int) -> None:
        board = Board(clients[n % len(clients)], settings)
        results.append(await board.create(spec(f"same finding {n}", key="audit:src/app.py:42")))

    try:
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(create, n)
    finally:
        for c in clients:
            await c.aclose()
    assert len({task.id for task, _ in results}) == 1
    assert sorted(fresh for _, fresh in results) == [False] * 49 + [True]
    board = Board(redis, settings)
    assert len(await board.tasks()) == 1
    assert [e.body.event for e in await events(redis, board)] == ["created"]
    again, fresh = await board.create(spec("rescan", key="audit:src/app.py:42"))
    assert (again.id, fresh) == (results[0][0].id, False)


async def test_dependencies_gate_readiness(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    first, _ = await board.create(spec("first"))
    second, _ = await board.create(spec("second", blocked_by=(first.id,)))
    assert second.deps_left == 1
    assert [t.id for t in await board.ready()] == [first.id]
    with pytest.raises(NotReady) as exc:
        await board.assign(second.id, "w")
    assert str(exc.value) == f"task {second.id} waits on 1 unfinished blocked-by task(s)"
    owned = await board.claim_next("w", ["audit"])
    assert owned is not None
    assert owned.id == first.id
    assert await board.claim_next("w", ["audit"]) is None  # second waits on first
    await board.complete(first.id, owned.token, agent=owned.owner or "")
    assert [t.id for t in await board.ready()] == [second.id]
    nxt = await board.claim_next("w", ["audit"])
    assert nxt is not None
    assert nxt.id == second.id

    # A task created after its dependency finished is ready at once.
    third, _ = await board.create(spec("third", blocked_by=(first.id,)))
    assert third.deps_left == 0
    assert [t.id for t in await board.ready()] == [third.id]
    with pytest.raises(TaskNotFound) as missing:
        await board.create(spec("orphan", blocked_by=("t-404",)))
    assert str(missing.value) == "blocked-by task t-404 does not exist; create it first or drop it"


async def test_a_dependency_named_twice_still_releases_the_task(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    first, _ = await board.create(spec("first"))
    second, _ = await board.create(spec("second", blocked_by=(first.id, first.id)))
    assert (second.deps_left, second.blocked_by) == (1, (first.id,))
    owned = await board.claim_next("w", ["audit"])
    assert owned is not None
    await board.complete(first.id, owned.token, agent=owned.owner or "")
    assert [t.id for t in await board.ready()] == [second.id]


async def test_claim_order_is_priority_then_age(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    created = [(await board.create(spec(f"p{i % 3}", priority=(i % 3) * 4)))[0] for i in range(30)]
    expected = [t.id for t in sorted(created, key=lambda t: (-t.priority, int(t.id.removeprefix("t-"))))]
    assert [t.id for t in await board.ready()] == expected
    order = []
    while (task := await board.claim_next("w", ["audit"])) is not None:
        order.append(task.id)
    assert order == expected


async def test_claim_matches_capabilities(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    docs, _ = await board.create(spec("write docs", kind="docs", priority=9))
    both, _ = await board.create(spec("audited docs", kind="docs", caps=("docs", "audit"), priority=8))
    audit, _ = await board.create(spec("audit", priority=1))
    got = await board.claim_next("auditor", ["audit"])
    assert got is not None
    assert got.id == audit.id
    assert await board.claim_next("auditor", ["audit"]) is None
    got = await board.claim_next("writer", ["audit", "docs"])
    assert got is not None
    assert got.id == docs.id
    got = await board.claim_next("any", ["*"])
    assert got is not None
    assert got.id == both.id


async def test_every_transition_is_an_event_in_the_stream_and_the_history(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=0.2, retry_backoff_s=0))
    a, _ = await board.create(spec("a"))
    b, _ = await board.create(spec("b", blocked_by=(a.id,)))
    c, _ = await board.create(spec("c", max_attempts=1))
    t = await board.assign(a.id, "w1")
    t = await board.start(a.id, t.token, agent=t.owner or "")
    await board.heartbeat(a.id, t.token, agent=t.owner or "")  # not a transition: no event
    t = await board.fail(a.id, t.token, "oops", agent=t.owner or "")
    t = await board.assign(a.id, "w1")
    t = await board.assign(a.id, "w2", force=True)
    t = await board.block(a.id, t.token, "question", agent=t.owner or "")
    await board.unblock(a.id, "answer")
    t = await board.assign(a.id, "w1")
    await board.release(a.id, t.token, agent=t.owner or "")
    assert await board.claim_next("w1", ["audit"]) is not None  # a (c waits behind it)
    t = await board.get(a.id)
    await board.complete(a.id, t.token, "x" * 20_000, agent=t.owner or "")  # a result too long for an event's detail
    owned_b = await board.claim_next("w2", ["audit"])
    owned_c = await board.claim_next("w3", ["audit"])
    assert owned_b is not None
    assert owned_c is not None
    assert (owned_b.id, owned_c.id) == (b.id, c.id)
    await anyio.sleep(0.3)
    moved, _ = await board.reclaim_expired()  # two leases expire in one call
    assert sorted(moved) == sorted([b.id, c.id])
    await board.cancel(b.id, "obsolete")

    stream = await events(redis, board)
    assert len({e.id for e in stream}) == len(stream)  # every event its own message id
    per_task = {task_id: [e for e in stream if e.body.task_id == task_id] for task_id in (a.id, b.id, c.id)}
    assert sum(len(v) for v in per_task.values()) == len(stream)
    for task_id, mine in per_task.items():
        assert await board.history(task_id) == mine
    assert [(e.body.event, e.body.state, e.body.owner) for e in per_task[a.id]] == [
        ("created", "open", None), ("assigned", "assigned", "w1"), ("started", "running", "w1"),
        ("retry", "open", None), ("assigned", "assigned", "w1"), ("reassigned", "assigned", "w2"),
        ("blocked", "blocked", None), ("unblocked", "open", None), ("assigned", "assigned", "w1"),
        ("released", "open", None), ("claimed", "running", "w1"), ("done", "done", "w1"),
    ]
    assert [e.body.token for e in per_task[a.id]] == [0, 1, 1, 2, 3, 4, 5, 5, 6, 7, 8, 8]
    assert per_task[a.id][-1].body.detail.startswith("x" * 100)
    assert (await board.get(a.id)).result == "x" * 20_000  # the task keeps the whole result
    assert [e.body.event for e in per_task[b.id]] == ["created", "claimed", "expired", "cancelled"]
    assert [(e.body.event, e.body.detail) for e in per_task[c.id]] == [
        ("created", "c"), ("claimed", ""), ("failed", "lease of w3 expired on attempt 1 of 1")]
    assert all(e.sender == "board" and e.to == "@all" for e in stream)


async def test_reclaim_reports_when_to_look_again(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=5, retry_backoff_s=2))
    assert await board.reclaim_expired() == ([], None)
    a, _ = await board.create(spec("a"))
    b, _ = await board.create(spec("b"))
    owned = await board.claim_next("w", ["audit"])
    assert owned is not None
    moved, wake = await board.reclaim_expired()
    assert (moved, wake) == ([], owned.lease_until)
    other = await board.claim_next("w", ["audit"])
    assert other is not None
    backing = await board.fail(other.id, other.token, "later", agent=other.owner or "")
    moved, wake = await board.reclaim_expired()
    assert moved == []
    assert wake == min(backing.not_before, owned.lease_until)
    assert {a.id, b.id} == {owned.id, other.id}


async def test_task_json_and_spec_validation(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec(
        "t", body="details", priority=7, key="k", evidence=("m1", "m2"), files=("a.py", "b c.py"),
    ))
    summary = task.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert (task.caps, task.evidence, task.files, task.max_attempts) == (("audit",), ("m1", "m2"),
                                                                       ("a.py", "b c.py"), 3)
    assert await board.get(task.id) == task
    with pytest.raises(ValueError, match=re.escape("'a,b' must be non-empty and contain no comma")):
        spec(caps=("a,b",))


async def test_a_long_result_is_clipped_in_the_event_at_a_character_boundary(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec())
    owned = await board.claim_next("w", ["audit"])
    assert owned is not None
    result = "ab" + "😀" * 5000  # 20,002 bytes; 16,384 falls inside a 4-byte character
    await board.complete(task.id, owned.token, result, agent=owned.owner or "")
    done = (await board.history(task.id))[-1]
    assert (done.body.event, done.body.detail) == ("done", "ab" + "😀" * 4095)
    assert (await board.get(task.id)).result == result
    assert (await events(redis, board))[-1] == done


async def test_claim_takes_many_in_one_call_and_done_claims_the_next(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"job {n}", priority=9 - n % 3)))[0].id for n in range(6)]
    full = await board.claim("a1", ["audit"], 4)
    first = full.tasks
    assert full.tip is None  # it took all it asked for: no need to watch for more
    assert [t.title for t in first] == ["job 0", "job 3", "job 1", "job 4"]  # priority, then age
    assert {t.state for t in first} == {"running"}
    reports, more = await board.settle("a1", [(first[0].id, first[0].token, "ok")], claim=3, caps=["audit"])
    nxt = more.tasks
    done = await board.get(reports[0].id)
    assert (done.state, [t.title for t in nxt]) == ("done", ["job 2", "job 5"])  # only two were left
    short = await board.claim("a1", ["audit"], 5)
    newest = cast(list[tuple[bytes, Any]], await redis.xrevrange(board.keys.events, count=1))[0][0]
    assert (short.tasks, short.tip) == ([], newest.decode())  # short: watch the events after this id
    assert sorted(await board.owned("a1")) == sorted(set(ids) - {done.id})
    events = [e.body.event for e in await board.history(nxt[0].id)]
    assert events == ["created", "claimed"]


async def test_owner_transitions_say_the_owners_status_on_the_bus(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    quiet = Board(redis, settings, speak=False)
    a, _ = await board.create(spec("first"))
    b, _ = await board.create(spec("second"))
    got = await board.claim_next("a1", ["audit"])
    assert got is not None
    await board.complete(got.id, got.token, "ok", agent=got.owner or "")
    assigned = await board.assign(b.id, "a2")
    await board.start(b.id, assigned.token, agent=assigned.owner or "")
    await board.fail(b.id, assigned.token, "boom", retry=False, agent=assigned.owner or "")
    c, _ = await quiet.create(spec("third"))
    silent = await quiet.claim_next("a3", ["audit"])
    assert silent is not None
    await quiet.complete(silent.id, silent.token, agent=silent.owner or "")
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.bus))
    said = [(m.sender, m.body.state, m.body.text) for m in (decode(f[FIELD.encode()]) for _, f in rows)]  # type: ignore[union-attr]
    assert said == [
        ("a1", "working", f"working on {a.id}: first"), ("a1", "done", f"done {a.id}: first"),
        ("a2", "working", f"working on {b.id}: second"), ("a2", "error", f"failed {b.id}: boom"),
    ]
    assert c.id not in str(said)


async def test_a_batch_is_one_status_and_leaves_every_index_exact(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"job {n}")))[0].id for n in range(5)]
    three = (await board.claim("a1", ["audit"], 3)).tasks
    leases = cast(list[bytes], await redis.zrange(board.keys.leases, 0, -1))
    assert (await board.counts())["running"] == 3
    assert sorted(text(m) for m in leases) == sorted(ids[:3])
    await board.settle("a1", [(t.id, t.token, "") for t in three], claim=5, caps=["audit"])
    counts = await board.counts()
    assert (counts["done"], counts["running"]) == (3, 2)
    assert await redis.zrange(board.keys.ready, 0, -1) == []
    assert sorted(await board.owned("a1")) == sorted(ids[3:])
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.bus))
    said = [(m.body.state, m.body.text, m.body.task_id) for m in (decode(f[FIELD.encode()]) for _, f in rows)]  # type: ignore[union-attr]
    assert said == [
        ("working", f"working on 3 tasks: {ids[0]}, {ids[1]}, {ids[2]}", ids[0]),
        ("done", f"done 3 tasks: {ids[0]}, {ids[1]}, {ids[2]}", ids[0]),
        ("working", f"working on 2 tasks: {ids[3]}, {ids[4]}", ids[3]),
    ]


async def test_settle_reports_many_each_fenced_and_claims_the_freed_slots(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    for n in range(5):
        await board.create(spec(f"job {n}"))
    mine = (await board.claim("a1", ["audit"], 3)).tasks
    stolen = await board.assign(mine[2].id, "a2", force=True)  # a1's token for it is stale now
    settled, claimed = await board.settle(
        "a1", [(t.id, t.token, f"did {t.title}") for t in mine], claim=3, caps=["audit"])
    assert [(r.id, r.error is None) for r in settled] == [(mine[0].id, True), (mine[1].id, True), (mine[2].id, False)]
    assert isinstance(settled[2].error, StaleToken)
    assert str(settled[2].error).startswith(f"token {mine[2].token} for task {mine[2].id} is stale")
    assert [t.title for t in claimed.tasks] == ["job 3", "job 4"]
    assert (await board.get(mine[0].id)).result == "did job 0"
    assert (await board.get(stolen.id)).owner == "a2"
    nothing, none = await board.settle("a1", [], claim=0)
    assert (nothing, none.tasks) == ([], [])


async def test_create_checks_a_foreign_spec_before_writing_anything(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)

    async def raw(spec: dict[str, object]) -> dict[str, object]:
        reply = await board.scripts["create"](
            keys=[board.keys.events], args=[board.keys.prefix, "01TESTID", 1000, json.dumps(spec)])
        return cast(dict[str, object], json.loads(reply))

    assert await raw({"kind": "audit", "title": "x", "priority": "high"}) == {
        "error": "invalid", "message": "task field priority must be a whole number from 0 to 9"}
    assert await raw({"kind": "", "title": "x"}) == {
        "error": "invalid", "message": "task field kind must be a non-empty string"}
    assert await raw({"kind": "audit", "title": "x", "deps": "t-1"}) == {
        "error": "invalid", "message": "task field deps must be an array of task ids"}
    assert await redis.keys("*") == []  # nothing half-written
    minimal = await raw({"kind": "audit", "title": "from node"})
    task = Task.from_redis(cast(dict[str, str], minimal["task"]))
    assert (task.priority, task.max_attempts, task.caps, task.state) == (5, 3, ("audit",), "open")
    assert [t.id for t in await board.ready()] == [task.id]


async def test_a_non_numeric_lease_is_refused_before_anything_moves(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec())
    reply = await board.scripts["claim"](
        keys=[board.keys.events], args=[board.keys.prefix, "01TESTID", 1000, "a1", "audit", "soon", 1, "0"])
    assert json.loads(reply) == {"error": "invalid", "message": "lease ms must be a number, got soon"}
    assert [t.id for t in await board.ready()] == [task.id]
    assert (await board.get(task.id)).state == "open"


async def test_assign_many_places_each_pair_and_reports_the_refused(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    a, _ = await board.create(spec("a"))
    b, _ = await board.create(spec("b"))
    taken = await board.claim_next("w9", ["audit"])
    assert taken is not None
    assert taken.id == a.id
    results = await board.assign_many([(a.id, "w1", ""), (b.id, "w2", "w2-i1"), ("t-404", "w1", "")])
    assert [(task_id, type(error).__name__ if error else None) for task_id, error in results] == [
        (a.id, "IllegalTransition"), (b.id, None), ("t-404", "TaskNotFound")]
    assert str(results[0][1]) == f"task {a.id} is running by w9, not open; use reassign to move it"
    placed = await board.get(b.id)
    assert (placed.state, placed.owner, placed.token) == ("running", "w2", 1)  # handed out started
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox("w2")))
    msg = decode(rows[0][1][FIELD.encode()])
    assert (msg.kind, msg.body.task_id, msg.body.instance, msg.body.state) == (  # type: ignore[union-attr]
        "assignment", b.id, "w2-i1", "running")
    assert [e.body.event for e in await board.history(b.id)] == ["created", "assigned"]
    assert (await board.received("w2", [(b.id, 1)]))[0].id == b.id
    assert await board.received("w2", [(b.id, 2)]) == []  # not its token
    assert await board.received("w1", [(b.id, 1)]) == []  # not its task


async def test_assign_many_sends_each_agent_one_message_for_its_tasks(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"audit {n}")))[0].id for n in range(5)]
    plan = [(ids[0], "w1", "w1-i1"), (ids[1], "w2", ""), (ids[2], "w1", "w1-i1"), (ids[3], "w1", "w1-i1")]
    assert [error for _, error in await board.assign_many(plan)] == [None] * 4
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox("w1")))
    [msg] = [decode(fields[FIELD.encode()]) for _, fields in rows]
    assert isinstance(msg, Assignment)
    assert (msg.to, msg.body.state, msg.body.instance) == ("w1", "running", "w1-i1")
    assert msg.body.refs() == [(ids[0], 1), (ids[2], 1), (ids[3], 1)]
    assert [m.title for m in msg.body.more or ()] == ["audit 2", "audit 3"]
    # The tasks themselves ride along, as the board holds them after the hand-out: no read needed.
    carried = [Task.from_redis(fields) for fields in msg.body.tasks or ()]
    assert carried == [await board.get(i) for i in (ids[0], ids[2], ids[3])]
    assert {(t.state, t.owner, t.token) for t in carried} == {("running", "w1", 1)}
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox("w2")))
    [other] = [decode(fields[FIELD.encode()]) for _, fields in rows]
    assert isinstance(other, Assignment)
    assert (other.body.refs(), other.body.instance, other.body.more) == ([(ids[1], 1)], None, None)
    # one "working on" status per agent, as a claim says it
    said = [decode(fields[FIELD.encode()]) for _, fields in
            cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.bus))]
    assert [(m.sender, m.body.text) for m in said] == [  # type: ignore[union-attr]
        ("w1", f"working on 3 tasks: {ids[0]}, {ids[2]}, {ids[3]}"), ("w2", f"working on {ids[1]}: audit 1")]
    assert (await board.get(ids[4])).state == "open"


async def test_assign_many_splits_a_hand_out_too_big_for_one_message(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    ids = [(await board.create(spec(f"{n:03} " + "x" * 290)))[0].id for n in range(40)]
    big, _ = await board.create(TaskSpec(kind="audit", title="big", body="\u0001" * 32_000))  # 192 KB escaped
    ids.insert(20, big.id)
    assert [error for _, error in await board.assign_many([(i, "w1", "") for i in ids])] == [None] * 41
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox("w1")))
    msgs = [decode(fields[FIELD.encode()]) for _, fields in rows]  # each under the 64 KiB limit to decode
    assert all(isinstance(m, Assignment) for m in msgs)
    assert len({m.id for m in msgs}) == len(msgs) > 2
    bodies = [m.body for m in msgs if isinstance(m, Assignment)]
    assert [ref for b in bodies for ref in b.refs()] == [(i, 1) for i in ids]
    # Every message carries its tasks whole, but the one too big to carry: it goes alone, to be read.
    assert [b.refs() for b in bodies if b.tasks is None] == [[(big.id, 1)]]
    assert all([t["id"] for t in b.tasks] == [r[0] for r in b.refs()] for b in bodies if b.tasks is not None)


async def test_assign_many_keeps_messages_under_the_readers_size_limit(redis: Redis, settings: Settings) -> None:
    small = settings.model_copy(update={"max_message_bytes": 4096})  # SWARM_MAX_MESSAGE_BYTES
    board = Board(redis, small)
    ids = [(await board.create(spec(f"audit {n}", body="b" * 200)))[0].id for n in range(30)]
    assert [error for _, error in await board.assign_many([(i, "w1", "") for i in ids])] == [None] * 30
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(board.keys.inbox("w1")))
    assert len(rows) > 3
    assert max(len(fields[FIELD.encode()]) for _, fields in rows) <= 3 * 4096 // 4
    msgs = [decode(fields[FIELD.encode()], 4096) for _, fields in rows]
    assert [ref for m in msgs if isinstance(m, Assignment) for ref in m.body.refs()] == [(i, 1) for i in ids]
    reply = await board.scripts["assign_many"](keys=[board.keys.events], args=[
        board.keys.prefix, "m-1", 1000, "", 30_000, "lots", ids[0], "w1", ""])
    assert json.loads(reply) == {"error": "invalid", "message": "message bytes must be a number, got lots"}


async def test_start_many_starts_each_fenced_by_its_token(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    a, _ = await board.create(spec("a"))
    b, _ = await board.create(spec("b"))
    ta = await board.assign(a.id, "w1")
    tb = await board.assign(b.id, "w1")
    results = await board.start_many("w1", [(a.id, ta.token), (b.id, tb.token + 5)])
    assert isinstance(results[0][1], Task)
    assert results[0][1].state == "running"
    assert isinstance(results[1][1], StaleToken)
    assert (await board.get(b.id)).state == "assigned"


async def test_renew_extends_every_lease_held_each_fenced_by_its_token(redis: Redis, settings: Settings) -> None:
    board = Board(redis, quick(settings, lease_s=5.0))
    a, b, c = [(await board.create(spec(n)))[0] for n in ("a", "b", "c")]
    held = (await board.claim("w1", ["audit"], 2)).tasks
    other = (await board.claim("w2", ["audit"], 1)).tasks
    before = {t.id: t.lease_until for t in held}
    await anyio.sleep(0.01)
    results = await board.renew("w1", [(held[0].id, held[0].token), (held[1].id, held[1].token + 1),
                                       (other[0].id, other[0].token)])
    assert [(task_id, type(error).__name__) for task_id, error in results] == [
        (a.id, "NoneType"), (b.id, "StaleToken"), (c.id, "IllegalTransition")]
    assert str(results[2][1]) == f"task {c.id} is owned by w2, not w1"
    after = await board.get(a.id)
    assert after.lease_until > before[a.id]
    assert await redis.zscore(board.keys.leases, a.id) == after.lease_until
    assert (await board.get(b.id)).lease_until == before[b.id]
    assert [e.body.event for e in await board.history(a.id)] == ["created", "claimed"]  # no event


async def test_a_third_party_holding_the_valid_token_is_refused_on_every_transition(
    redis: Redis, settings: Settings
) -> None:
    board = Board(redis, settings)
    for title in ("claimed", "assigned"):
        await board.create(spec(title))
    claimed = await board.claim_next("a1", ["audit"])
    assigned = await board.assign("t-2", "a1")
    assert claimed is not None
    for task in (claimed, assigned):
        before = await board.get(task.id)
        for action in owner_actions(board, task.id, task.token, agent="mallory"):
            with pytest.raises(IllegalTransition) as exc:
                await action()
            assert str(exc.value) == f"task {task.id} is owned by a1, not mallory"
        assert await board.get(task.id) == before  # nothing moved, not even the lease
        renewed = await board.renew("mallory", [(task.id, task.token)])
        assert [str(e) for _, e in renewed] == [f"task {task.id} is owned by a1, not mallory"]
        settled, _ = await board.settle("mallory", [(task.id, task.token, "forged")])
        assert [str(r.error) for r in settled] == [f"task {task.id} is owned by a1, not mallory"]
    assert (await board.complete(claimed.id, claimed.token, "mine", agent="a1")).state == "done"
