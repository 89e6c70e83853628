"""`swarm up`, `swarm ps`, `swarm down` with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board, TaskSpec
from swarm.cli import app
from swarm.registry import Registry
from swarm.settings import Settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "tests" / "procs" / "agent_handlers.py"


def start(args: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "swarm", *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


async def test_up_runs_the_roster_and_down_stops_it_gracefully(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    roster = tmp_path / "agents"
    roster.mkdir()
    for name in ("w1", "w2"):
        (roster / f"{name}.toml").write_text(
            f'name = "{name}"\ncapabilities = ["work"]\nconcurrency = 2\nhandler = "{HANDLER}:noop"\n')
    (roster / "boss.toml").write_text('name = "boss"\ncaptain = true\n')
    home = tmp_path / "home"
    assert settings.redis_url is not None
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_HOME": str(home), "SWARM_HEARTBEAT_S": "0.2"}
    log = (tmp_path / "up.log").open("wb")
    up = start(["up", "--agents", str(roster), "--no-discovery"], env, log)
    runner = CliRunner()
    cli_env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(home)}
    try:
        registry = Registry(redis, settings)
        async def ready() -> bool:
            alive = {a.card.name for a in await registry.all() if a.liveness == "alive"}
            return alive == {"w1", "w2"} and bool(await redis.exists(registry.keys.leader))

        await eventually(ready, within=20)
        board = Board(redis, settings)
        ids = [(await board.create(TaskSpec(kind="work", title=f"job {n}")))[0].id for n in range(6)]
        async def finished() -> bool:
            return {(await board.get(i)).state for i in ids} == {"done"}

        await eventually(finished, within=20)
        ps = runner.invoke(app, ["ps", "--json"], env=cli_env)
        assert ps.exit_code == 0, ps.stderr
        assert sorted((p["name"], p["alive"]) for p in json.loads(ps.stdout)) == [
            ("boss", True), ("w1", True), ("w2", True)]
        down = runner.invoke(app, ["down"], env=cli_env)
        assert (down.exit_code, down.stdout) == (0, "swarm stopped\n")
        assert up.wait(timeout=20) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
    assert {a.card.name: a.liveness for a in await Registry(redis, settings).all()} == {"w1": "gone", "w2": "gone"}
    assert not await redis.exists(Registry(redis, settings).keys.leader)  # the captain resigned
    output = (tmp_path / "up.log").read_text()
    assert "        w1 | w1 running: can work, concurrency 2" in output
    assert "      boss | captain boss." in output
    gone = runner.invoke(app, ["ps"], env=cli_env)
    assert (gone.exit_code, gone.stdout) == (0, "no `swarm up` running here\n")
