"""The discovery engine on a real server: findings become tasks once, gone findings close their
tasks as obsolete, signals carry evidence, and a fruitless repetition escalates exactly once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import cast

import anyio
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board
from swarm.cli import app
from swarm.discovery.engine import Discovery
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
