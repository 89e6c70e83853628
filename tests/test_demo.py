"""`swarm demo` end to end on a real server: chatter -> signals -> tasks of every kind -> done."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from swarm.board import Board
from swarm.cli.demo import DEFAULT_ROSTER, run_demo
from swarm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "repos"
KINDS = {"consolidation", "audit", "docs", "todo"}


async def test_demo_finds_and_finishes_work_of_every_kind(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    demo = settings.model_copy(update={"name": "demo-test", "home": tmp_path / ".swarm"})
    summary = await run_demo(redis, demo, FIXTURES, cards=list(DEFAULT_ROSTER), max_s=40, rounds=8, period=0.05)
    assert set(summary.done) == KINDS
    assert (summary.failed, summary.open) == (0, 0)
    assert summary.signals >= 1
    assert 0 < summary.coalesced <= summary.idle
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
    assert re.search(r"done / failed: +(\d+) / 0\n", done.stdout)
    assert f"artifacts:          {tmp_path / '.swarm' / 'artifacts'}" in done.stdout
