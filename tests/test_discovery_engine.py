"""The discovery engine on a real server: findings become tasks once, gone findings close their
tasks as obsolete, signals carry evidence, and a fruitless repetition escalates exactly once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import cast

import anyio
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board, TaskSpec
from swarm.cli import app
from swarm.discovery.engine import Discovery
from swarm.discovery.limits import DiscoveryLimits
from swarm.discovery.sources import load_sources
from swarm.keys import Keys
from swarm.protocol import Chat, Signal, StatusBody, decode, message
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from tests.helpers import eventually

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "repos"


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURES / "todo", root)
    return root


async def test_a_rescan_creates_no_duplicate_and_a_fixed_finding_closes_its_task(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    root = workspace(tmp_path)
    engine = Discovery(redis, settings, root, sources=load_sources(["todo"]))
    first = await engine.discover()
    assert len(first.created) == 4
    assert first.existing == first.obsolete == []
    again = await engine.discover()
    assert (again.created, sorted(again.existing), again.obsolete) == ([], sorted(first.created), [])

    board = Board(redis, settings)
    tasks = {t.title: t for t in await board.tasks()}
    assert len(tasks) == 4
    shell = tasks["Resolve 1 tagged comment in run.sh"]
    (root / "run.sh").write_text("#!/bin/sh\necho fixed\n")
    third = await engine.discover()
    assert third.created == []
    assert third.obsolete == [shell.id]
    closed = await board.get(shell.id)
    assert (closed.state, closed.reason) == ("cancelled", "obsolete: todo no longer finds this on rescan")
    assert {t.state for t in await board.tasks() if t.id != shell.id} == {"open"}
    # The finding comes back (a revert): a new task for it, not the cancelled one.
    shutil.copy(FIXTURES / "todo" / "run.sh", root / "run.sh")
    fourth = await engine.discover()
    assert len(fourth.created) == 1
    assert fourth.created[0] != shell.id
    assert (await board.get(fourth.created[0])).state == "open"


async def test_a_signal_creates_tasks_with_its_evidence(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    root = workspace(tmp_path)
    await Registry(redis, settings).register(AgentCard(name="a1", capabilities=("todo",)), "a1-i1")
    engine = Discovery(redis, settings, root)
    idle = [message(StatusBody(text=text, state="idle"), sender="a1")
            for text in ("standing by", "awaiting orders", "idle, no tasks")]
    fired: list[Signal] = []
    for msg in idle:
        fired += await engine.detector.observe(msg)
    assert len(fired) == 1
    outcome = await engine.on_signal(fired[0])
    assert len(outcome.created) == 4
    for task in await Board(redis, settings).tasks():
        assert task.kind == "todo"
        assert task.evidence[0] == fired[0].id
        assert set(task.evidence[1:]) == {m.id for m in idle}


async def test_a_fruitless_repetition_escalates_once(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    root = workspace(tmp_path)
    await Registry(redis, settings).register(AgentCard(name="a1", capabilities=("review",)), "a1-i1")
    engine = Discovery(redis, settings, root)
    keys = Keys(settings.name)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for n in range(8):
            await engine.bus.publish(message(StatusBody(text=("standing by", "awaiting orders")[n % 2]), sender="a1"))
        await eventually(lambda: _seen(engine, 8))
        tg.cancel_scope.cancel()
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.captain))
    msgs = [decode(fields[b"m"]) for _, fields in rows]
    signals = [m for m in msgs if isinstance(m, Signal)]
    chats = [m for m in msgs if isinstance(m, Chat)]
    assert [s.body.agent for s in signals] == ["a1"]
    assert len(chats) == 1
    assert chats[0].priority == "urgent"
    assert chats[0].correlation_id == signals[0].id
    assert chats[0].body.text.startswith("a1 keeps repeating 'standing by' (3 times) and the sources (none fit "
                                         "its capabilities) found no open work in ")
    assert await Board(redis, settings).tasks() == []


async def _seen(engine: Discovery, count: int) -> bool:
    return engine.seen >= count


def test_discover_cli_dry_run_json_and_bad_options(redis_url: str, tmp_path: Path) -> None:
    root = workspace(tmp_path)
    env = {"SWARM_REDIS_URL": redis_url, "SWARM_NAME": "disc-cli"}
    runner = CliRunner()
    done = runner.invoke(app, ["discover", "--path", str(root), "--kind", "todo", "--dry-run", "--json"], env=env)
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is True
    assert report["created"] == []
    assert sorted(d["title"] for d in report["drafts"]) == [
        "Resolve 1 tagged comment in run.sh", "Resolve 1 tagged comment in sub/keep.tmp.py",
        "Resolve 3 tagged comments in web/app.js", "Resolve 4 tagged comments in main.py"]
    bad = runner.invoke(app, ["discover", "--path", str(root), "--kind", "lint"], env=env)
    assert (bad.exit_code, bad.stderr) == (1, "error: unknown --kind 'lint'; use consolidation, audit, docs or todo\n")
    missing = runner.invoke(app, ["discover", "--path", str(tmp_path / "nope")], env=env)
    assert (missing.exit_code, missing.stderr) == (
        1, f"error: --path {tmp_path / 'nope'} is not a directory; point it at the code to scan\n")
    signals = runner.invoke(app, ["signals", "--json"], env=env)
    assert (signals.exit_code, json.loads(signals.stdout)) == (0, [])


# --- issue 13 (5, 8) and issue 18 (3): blocked agents, obsolete tasks in one step, tasks follow the code ---


async def test_repeated_blocked_reports_escalate_who_is_blocked_on_what_once(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    root = workspace(tmp_path)
    await Registry(redis, settings).register(AgentCard(name="a1", capabilities=("todo",)), "a1-i1")
    engine = Discovery(redis, settings, root)
    keys = Keys(settings.name)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for _ in range(4):
            await engine.bus.publish(message(StatusBody(text="Blocked: t-4 needs the staging API key"), sender="a1"))
        await eventually(lambda: _seen(engine, 4))
        tg.cancel_scope.cancel()
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.captain))
    msgs = [decode(fields[b"m"]) for _, fields in rows]
    [signal] = [m for m in msgs if isinstance(m, Signal)]
    assert (signal.body.agent, signal.body.fingerprint, signal.body.count, signal.tags) == (
        "a1", "blocked", 2, ("blocked", "scope:agent"))
    [chat] = [m for m in msgs if isinstance(m, Chat)]
    assert (chat.body.text, chat.priority, chat.correlation_id, chat.tags) == (
        "a1 is blocked: t-4 needs the staging API key (said 2 times); give it what it needs, or reassign its "
        "work (`swarm task list --owner a1`)", "urgent", signal.id, ("blocked",))
    # not idle chatter: no work was looked for, nothing was made
    assert await Board(redis, settings).tasks() == []
    [rep] = await engine.detector.signals()
    assert rep.signal.body.count == 4  # the later reports joined the one signal: one escalation per window


async def test_a_rescan_refreshes_tasks_whose_findings_changed(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    root = workspace(tmp_path)
    engine = Discovery(redis, settings, root, sources=load_sources(["todo"]))
    first = await engine.discover(evidence=("sig-1",))
    board = Board(redis, settings)
    task = next(t for t in await board.tasks() if t.files == ("main.py",))
    assert task.title == "Resolve 4 tagged comments in main.py"
    assert "- `main.py:11` FIXME: off by one" in task.body
    # one finding fixed, and three lines inserted above the rest
    main = root / "main.py"
    main.write_text("#\n#\n#\n" + main.read_text().replace("  # FIXME(bob): off by one", ""))
    again = await engine.discover(evidence=("sig-2",))
    assert (again.created, again.obsolete, again.refreshed) == ([], [], [task.id])
    assert sorted(again.existing) == sorted(first.created)
    fresh = await board.get(task.id)
    assert fresh.title == "Resolve 3 tagged comments in main.py"
    assert fresh.body.splitlines()[2:] == [
        "- `main.py:6` TODO: write the parser",
        "- `main.py:15` XXX: hack around the old API",
        "- `main.py:16` TODO: write the parser",
    ]
    assert fresh.evidence == ("sig-1", "sig-2")
    assert [(e.body.event, e.body.detail) for e in await board.history(task.id)] == [
        ("created", "Resolve 4 tagged comments in main.py"), ("refreshed", "title, body")]
    # the other tasks did not change, so they were not touched
    for other in set(first.created) - {task.id}:
        assert [e.body.event for e in await board.history(other)] == ["created"]
    assert (await engine.discover()).refreshed == []


async def test_a_close_left_half_done_by_a_crash_is_finished_on_the_next_rescan(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    root = workspace(tmp_path)
    engine = Discovery(redis, settings, root, sources=load_sources(["todo"]))
    await engine.discover()
    board = Board(redis, settings)
    shell = next(t for t in await board.tasks() if t.files == ("run.sh",))
    keys = Keys(settings.name)
    # What the old three-step close left when it died after its first step: the task cancelled as
    # obsolete, its dedup key and index entry still there.
    (root / "run.sh").write_text("#!/bin/sh\necho fixed\n")
    await board.cancel(shell.id, "obsolete: todo no longer finds this on rescan")
    assert await redis.hget(keys.dedup, shell.key) is not None
    assert await redis.hget(keys.discovered("todo"), shell.key) is not None
    rescan = await engine.discover()
    assert rescan.obsolete == []  # cancelled already
    assert await redis.hget(keys.dedup, shell.key) is None
    assert await redis.hget(keys.discovered("todo"), shell.key) is None
    shutil.copy(FIXTURES / "todo" / "run.sh", root / "run.sh")  # the finding comes back: a new task
    [new] = (await engine.discover()).created
    assert new != shell.id
    # a task someone finished keeps its key: its history stands
    done = await board.get(new)
    await board.cancel(done.id, "won't fix")
    (root / "run.sh").write_text("#!/bin/sh\n")
    await engine.discover()
    assert await redis.hget(keys.dedup, done.key) == done.id.encode()


async def test_discovery_creates_its_tasks_in_one_call_and_walks_the_tree_with_its_limits(
    redis: Redis, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = workspace(tmp_path)

    async def one_at_a_time(*_: object) -> None:
        raise AssertionError("discovery must create its tasks with create_many")

    monkeypatch.setattr(Board, "create", one_at_a_time)
    small = DiscoveryLimits(max_file_bytes=(root / "main.py").stat().st_size - 1)
    engine = Discovery(redis, settings, root, sources=load_sources(["todo"]), limits=small)
    outcome = await engine.discover()
    assert sorted(d.files[0] for d in outcome.drafts) == ["run.sh", "sub/keep.tmp.py", "web/app.js"]
    assert engine.sources[0].limits == DiscoveryLimits()  # sources given are used as they are


def test_discover_cli_takes_limits_and_the_old_audits_name(redis_url: str, tmp_path: Path) -> None:
    root = workspace(tmp_path)
    env = {"SWARM_REDIS_URL": redis_url, "SWARM_NAME": "disc-limits"}
    runner = CliRunner()
    size = str((root / "main.py").stat().st_size - 1)
    done = runner.invoke(app, ["discover", "--path", str(root), "--kind", "todo", "--dry-run", "--json",
                               "--limit", f"max_file_bytes={size}", "--limit", "todo_tags=FIXME"], env=env)
    assert done.exit_code == 0, done.stderr
    assert [d["title"] for d in json.loads(done.stdout)["drafts"]] == ["Resolve 1 tagged comment in web/app.js"]
    bad = runner.invoke(app, ["discover", "--path", str(root), "--limit", "max_file_lines=0"], env=env)
    assert (bad.exit_code, bad.stderr) == (
        1, "error: --limit max_file_lines=0: Input should be greater than or equal to 1\n")
    audits = runner.invoke(app, ["discover", "--path", str(root), "--kind", "audits", "--dry-run", "--json"],
                           env=env)
    assert audits.exit_code == 0, audits.stderr
    assert {d["kind"] for d in json.loads(audits.stdout)["drafts"]} <= {"audit"}


async def test_the_audit_source_takes_over_what_it_found_as_audits(redis: Redis, settings: Settings) -> None:
    board, keys = Board(redis, settings), Keys(settings.name)
    gone, _ = await board.create(TaskSpec(kind="audit", title="Fix 1 security finding in old.py", key="audit:old"))
    await redis.hset(keys.discovered("audits"), "audit:old", gone.id)
    engine = Discovery(redis, settings, FIXTURES / "audits", sources=load_sources(["audits"]))
    outcome = await engine.discover()
    assert outcome.obsolete == [gone.id]
    assert (await board.get(gone.id)).reason == "obsolete: audit no longer finds this on rescan"
    assert await redis.exists(keys.discovered("audits")) == 0
    assert await redis.hlen(keys.discovered("audit")) == len(outcome.created) == 4
