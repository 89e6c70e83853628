"""The verbs operators reach for first: retry, edit, delayed tasks, list filters, purge, pause,
batched creation; on the board and through the CLI."""

from __future__ import annotations

import json

import anyio
import pytest
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.captain import Captain
from swarm.errors import ConfigError, IllegalTransition, NotReady, TaskNotFound
from swarm.settings import Settings


def spec(title: str, **fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"kind": "audit", "title": title, **fields})


async def test_retry_requeues_a_failed_or_cancelled_task_with_its_history(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    task, _ = await board.create(spec("flaky", max_attempts=1))
    got = await board.claim_next("w", ["audit"])
    assert got is not None
    failed = await board.fail(task.id, got.token, "boom", agent="w")
    assert failed.state == "failed"
    again = await board.retry(task.id, "by hand")
    assert (again.state, again.attempts, again.token, again.owner) == ("open", 0, got.token + 1, None)
    assert [e.body.event for e in await board.history(task.id)] == ["created", "claimed", "failed", "retried"]
    assert [t.id for t in await board.ready()] == [task.id]
    with pytest.raises(IllegalTransition) as exc:
        await board.retry(task.id)
    assert str(exc.value) == f"task {task.id} is open; only a failed or cancelled task can be retried"


async def test_edit_changes_a_task_before_it_runs_and_its_place_in_line(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    first, _ = await board.create(spec("first"))
    second, _ = await board.create(spec("second"))
    edited = await board.edit(second.id, priority=9, title="second, urgent", caps=["audit", "py"])
    assert (edited.priority, edited.title, edited.caps) == (9, "second, urgent", ("audit", "py"))
    assert [t.id for t in await board.ready()] == [second.id, first.id]
    assert (await board.history(second.id))[-1].body.detail == "title, caps, priority"
    running = await board.claim_next("w", ["*"])
    assert running is not None
    with pytest.raises(IllegalTransition) as exc:
        await board.edit(running.id, priority=1)
    assert str(exc.value) == f"task {running.id} is running; edit a task before it runs (or cancel it)"
    with pytest.raises(ConfigError) as bad:
        await board.edit(first.id)
    assert str(bad.value) == "nothing to edit: give priority, title, body or caps"


async def test_a_delayed_task_is_ready_only_from_its_time(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    later, _ = await board.create(spec("later", not_before=await board.now_ms() + 300))
    assert await board.claim_next("w", ["audit"]) is None
    assert "delayed: ready in" in await Captain(redis, settings).why(later.id)
    await anyio.sleep(0.35)
    got = await board.claim_next("w", ["audit"])
    assert got is not None
    assert got.id == later.id


async def test_list_filters_by_owner_text_and_age_with_paging(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    for n in range(6):
        await board.create(spec(f"job {n}", body="needle" if n % 2 else ""))
    await board.claim("a1", ["audit"], 2)
    assert [t.id for t in await board.tasks(owner="a1")] == ["t-1", "t-2"]
    assert [t.id for t in await board.tasks(search="NEEDLE")] == ["t-2", "t-4", "t-6"]
    assert [t.id for t in await board.tasks(search="needle", limit=2, offset=2)] == ["t-6"]
    assert [t.id for t in await board.tasks(limit=2, offset=4)] == ["t-5", "t-6"]
    assert await board.tasks(since=await board.now_ms() + 1000) == []


async def test_purge_forgets_old_finished_tasks_and_frees_their_keys(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    done, _ = await board.create(spec("old", key="finding-1"))
    keep, _ = await board.create(spec("open"))
    got = await board.claim_next("w", ["audit"])
    assert got is not None
    assert got.id == done.id
    await board.complete(done.id, got.token, agent="w")
    assert await board.purge(60_000) == 0  # finished just now: kept
    await anyio.sleep(0.05)
    assert await board.purge(10) == 1
    with pytest.raises(TaskNotFound):
        await board.get(done.id)
    assert await redis.exists(board.keys.history(done.id)) == 0
    assert await redis.zscore(board.keys.tasks, done.id) is None
    again, created = await board.create(spec("old", key="finding-1"))  # the key is free for a new task
    assert (created, again.id != done.id) == (True, True)
    assert (await board.get(keep.id)).state == "open"


async def test_a_paused_kind_is_neither_claimed_nor_assigned_until_resumed(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    docs, _ = await board.create(spec("write", kind="docs"))
    audit, _ = await board.create(spec("check"))
    await board.pause("docs")
    assert await board.paused() == ["docs"]
    got = await board.claim_next("w", ["*"])
    assert got is not None
    assert got.id == audit.id
    assert await board.claim_next("w", ["*"]) is None
    with pytest.raises(NotReady) as exc:
        await board.assign(docs.id, "w")
    assert str(exc.value) == (f"task {docs.id} is of kind docs, which is paused; `swarm resume docs` lets it be "
                              "assigned")
    assert await Captain(redis, settings).why(docs.id) == (
        f"{docs.id} is open, but its kind docs is paused; `swarm resume docs` hands it out.")
    await board.resume("docs")
    resumed = await board.claim_next("w", ["*"])
    assert resumed is not None
    assert resumed.id == docs.id


async def test_create_many_checks_every_spec_before_it_writes(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    made = await board.create_many([spec(f"job {n}", key=f"k{n % 3}") for n in range(5)], chunk=2)
    assert made == [("t-1", True), ("t-2", True), ("t-3", True), ("t-1", False), ("t-2", False)]
    payload = json.dumps([{"kind": "audit", "title": "fine"}, {"kind": "audit", "title": ""}])
    with pytest.raises(ConfigError) as exc:
        await board._call("create_many", payload)
    assert str(exc.value) == "spec 2: task field title must be a non-empty string"
    assert await board.counts() == {**dict.fromkeys(await board.counts(), 0), "open": 3}
    # Chunks go one after another: a refused chunk stops the rest (those before it stay created).
    bad = TaskSpec.model_construct(kind="audit", title="", body="", priority=5, key="", evidence=(), blocked_by=(),
                                   caps=(), files=(), max_attempts=None, not_before=0, budget_usd=0.0)
    with pytest.raises(ConfigError) as refused:
        await board.create_many([spec("four"), spec("five"), spec("six"), bad, spec("eight"), spec("nine")], chunk=2)
    assert str(refused.value) == "spec 2: task field title must be a non-empty string"
    assert [t.title for t in await board.tasks()] == ["job 0", "job 1", "job 2", "four", "five"]
