"""`swarm demo` end to end on a real server: chatter -> signals -> tasks of every kind -> done."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board, TaskSpec
from swarm.bus import Delivery
from swarm.cli import app
from swarm.cli.demo import DEFAULT_ROSTER, run_demo, take_board
from swarm.discovery.engine import Discovery
from swarm.errors import ConfigError
from swarm.keys import Keys
from swarm.registry import Registry
from swarm.roster import RosterCard
from swarm.settings import Settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "repos"
KINDS = {"consolidation", "audit", "docs", "todo"}


async def test_demo_finds_and_finishes_work_of_every_kind(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    demo = settings.model_copy(update={"name": "demo-test", "home": tmp_path / ".swarm"})
    summary = await run_demo(redis, demo, FIXTURES, cards=list(DEFAULT_ROSTER), max_s=40, rounds=8, period=0.05)
    assert set(summary.done) == KINDS
    assert (summary.failed, summary.open) == (0, 0)
    assert summary.read_all
    assert summary.chatter <= summary.seen
    assert summary.agent_signals >= 1
    assert 0 < summary.coalesced <= summary.seen
    tasks = await Board(redis, demo).tasks()
    assert {t.kind for t in tasks} == KINDS
    for task in tasks:
        artifact = summary.artifacts / f"{task.id}.md"
        assert artifact.read_text().startswith(f"# {task.title}\n")
        assert task.result.endswith(f"written up in {artifact}")
        assert task.evidence, "every discovered task links the signal that caused it"


def test_demo_command_prints_the_summary(redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "SWARM_REDIS_URL": redis_url, "SWARM_HOME": str(tmp_path / ".swarm")}
    done = subprocess.run(
        [sys.executable, "-m", "swarm", "demo", "--path", str(FIXTURES), "--swarm", "demo-cli", "--no-live",
         "--max-seconds", "40", "--agents", str(tmp_path / "no-roster")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"tasks found: +\d+ audit, \d+ consolidation, \d+ docs, \d+ todo\n", done.stdout)
    # Every figure says what it counts, and they agree: all the chatter is among what discovery read.
    chatter = re.search(r"\n  chatter: +(\d+) status messages published in the agents' names, (\d+) of them "
                        r"idle talk\n", done.stdout)
    read = re.search(r"\n  read by discovery: +(\d+) bus messages: those (\d+) and (\d+) status updates the agents "
                     r"sent themselves\n", done.stdout)
    repeats = re.search(r"\n  coalesced: +(\d+) of those (\d+) were repeats the captain got inside (\d+) per-agent "
                        r"signals, not one by one; \d+ swarm-wide signals?\n", done.stdout)
    assert chatter
    assert read
    assert repeats
    sent, seen = int(chatter[1]), int(read[1])
    assert int(chatter[2]) <= sent == int(read[2])
    assert seen == sent + int(read[3])
    assert 0 < int(repeats[1]) <= seen == int(repeats[2])
    assert re.search(r"done / failed: +(\d+) / 0\n", done.stdout)
    assert f"artifacts:          {tmp_path / '.swarm' / 'artifacts'}" in done.stdout


class Lagging(Discovery):
    """Reads nothing more after its first signal until the board's work is finished: the order of
    events that, under load, ended the demo while discovery had read only part of the chatter (and
    before any per-agent signal: `assert 0 < summary.coalesced` failed)."""

    async def on_message(self, delivery: Delivery) -> None:
        if self.signals:
            async def finished() -> bool:
                tasks = await self.board.tasks(limit=10_000)
                return bool(tasks) and all(t.terminal for t in tasks)

            await eventually(finished, within=30)
        await super().on_message(delivery)


async def test_demo_ends_only_after_discovery_has_read_all_the_chatter(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    demo = settings.model_copy(update={"name": "demo-lag", "home": tmp_path / ".swarm"})
    lagging = Lagging(redis, demo, FIXTURES)
    summary = await run_demo(redis, demo, FIXTURES, cards=list(DEFAULT_ROSTER), max_s=40, rounds=8, period=0.02,
                             discovery=lagging)
    assert summary.read_all
    assert lagging.seen >= summary.chatter == 56
    assert summary.coalesced > 0
    assert (summary.failed, summary.open) == (0, 0)


async def test_demo_never_wipes_a_board_it_did_not_make(redis: Redis, settings: Settings) -> None:
    # The demo wiped the board of the swarm it ran in, made by the demo or not (`SWARM_NAME=demo`).
    mine = settings.model_copy(update={"name": "swarm-demo"})
    await Board(redis, mine).create(TaskSpec(kind="docs", title="my real work"))
    with pytest.raises(ConfigError) as refused:
        await run_demo(redis, mine, FIXTURES, cards=list(DEFAULT_ROSTER), max_s=5)
    assert str(refused.value) == (
        "swarm 'swarm-demo' on this server has a board that `swarm demo` did not make, and the demo wipes its "
        "board before it runs; run the demo with another --swarm NAME")
    assert [t.title for t in await Board(redis, mine).tasks()] == ["my real work"]

    made = settings.model_copy(update={"name": "made-by-demo"})
    await take_board(redis, Keys(made.name))  # empty: the demo may take it, and marks it
    await Board(redis, made).create(TaskSpec(kind="docs", title="from an earlier demo run"))
    await take_board(redis, Keys(made.name))  # marked: wiped for the next run
    assert await Board(redis, made).tasks() == []


def test_demo_refuses_to_run_in_the_users_own_swarm(redis_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--no-live"], env={
        "SWARM_REDIS_URL": redis_url, "SWARM_NAME": "swarm-demo", "SWARM_HOME": str(tmp_path)})
    assert (result.exit_code, result.stderr) == (
        1, "error: --swarm 'swarm-demo' is your SWARM_NAME; the demo wipes its board, so pick another name "
           "(--swarm NAME)\n")


async def test_demo_agents_drain_when_it_stops(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    # The demo cancelled its agents when it stopped: a task still running stayed running, owned by an
    # agent that no longer existed, until its lease ran out.
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "notes.py").write_text("def f() -> None:\n    pass  # TODO: write the notes\n")
    (tmp_path / "slow.py").write_text(
        "from pathlib import Path\nimport anyio\n\n\n"
        "async def handle(task, ctx):\n"
        "    (Path(__file__).parent / 'started').write_text(task.id)\n"
        "    await anyio.sleep(60)\n"
    )
    cards = [RosterCard(name="chief", captain=True),
             RosterCard(name="w1", capabilities=("todo",), handler=f"{tmp_path / 'slow.py'}:handle", grace_s=0.2)]
    demo = settings.model_copy(update={"name": "demo-drain", "home": tmp_path / ".swarm"})
    summary = await run_demo(redis, demo, workspace, cards=cards, max_s=4, rounds=4, period=0.02)
    task_id = (tmp_path / "started").read_text()  # the handler ran, and was still running at the end
    task = await Board(redis, demo).get(task_id)
    assert (task.state, task.owner) == ("open", None)  # released by the draining agent, not left running
    assert summary.open == 1
    assert [(a.card.name, a.liveness) for a in await Registry(redis, demo).all()] == [("w1", "gone")]
