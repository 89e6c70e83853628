"""`swarm up`, `swarm ps`, `swarm down` with real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board, TaskSpec
from swarm.cli import app
from swarm.registry import Registry
from swarm.server import process_started
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    up = start(["up", "--agents", str(roster), "--no-discovery", "--web", "--web-port", str(web_port)], env, log)
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

        async def web_healthy() -> bool:
            async with httpx.AsyncClient() as http:
                try:
                    return (await http.get(f"http://127.0.0.1:{web_port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

        await eventually(web_healthy, within=20)  # `--web`: the board and API, with the rest
        ps = runner.invoke(app, ["ps", "--json"], env=cli_env)
        assert ps.exit_code == 0, ps.stderr
        assert sorted((p["name"], p["alive"]) for p in json.loads(ps.stdout)) == [
            ("boss", True), ("w1", True), ("w2", True), ("web", True)]
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


def worker_roster(tmp_path: Path) -> Path:
    roster = tmp_path / "agents"
    roster.mkdir()
    (roster / "w1.toml").write_text(f'name = "w1"\ncapabilities = ["work"]\nhandler = "{HANDLER}:noop"\n')
    return roster


async def test_a_second_up_for_the_same_home_is_refused_and_the_first_runs_on(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    # A second `swarm up` used to take over: the first run's agents stopped as replaced ("another
    # instance registered with this name") and `swarm ps`/`swarm down` lost track of the first run.
    roster = worker_roster(tmp_path)
    home = tmp_path / "home"
    assert settings.redis_url is not None
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_HOME": str(home), "SWARM_HEARTBEAT_S": "0.2"}
    cli_env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(home)}
    runner = CliRunner()
    log = (tmp_path / "up.log").open("wb")
    first = start(["up", "--agents", str(roster), "--no-discovery"], env, log)
    try:
        registry = Registry(redis, settings)

        async def running() -> str | None:
            card = await registry.card("w1")
            alive = [a for a in await registry.all() if a.liveness == "alive"]
            up_json = home / "up.json"
            return card.instance if card and alive and up_json.exists() and json.loads(up_json.read_text())[
                "children"] else None

        instance = await eventually(running, within=20)
        with anyio.fail_after(30):
            second = await anyio.run_process(
                [sys.executable, "-m", "swarm", "up", "--agents", str(roster), "--no-discovery"],
                cwd=ROOT, env=env, check=False)
        state = json.loads((home / "up.json").read_text())
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state["since"]))
        assert (second.returncode, second.stderr.decode(), second.stdout.decode()) == (
            1, f"error: `swarm up` is already running for {home.resolve()} (pid {first.pid}, started {when}); "
               "stop it with `swarm down` first, or run this one with another SWARM_HOME\n", "")
        assert state["pid"] == first.pid
        card = await registry.card("w1")  # the first run's agent, still the same instance
        assert card is not None
        assert card.instance == instance
        ps = runner.invoke(app, ["ps", "--json"], env=cli_env)
        assert [(p["name"], p["alive"]) for p in json.loads(ps.stdout)] == [("w1", True)]
        down = runner.invoke(app, ["down"], env=cli_env)
        assert (down.exit_code, down.stdout) == (0, "swarm stopped\n")
        assert first.wait(timeout=20) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_down_never_signals_a_pid_that_another_process_took_over(tmp_path: Path) -> None:
    # `swarm down` used to signal whatever process had the recorded pid by then.
    home = tmp_path / "home"
    home.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])  # holds a pid up.json names, but started at another time
    child = subprocess.Popen(["sleep", "60"])  # the one `swarm up` really started
    try:
        started = process_started(child.pid)
        stranger_started = process_started(stranger.pid)
        assert started is not None
        assert stranger_started is not None
        (home / "up.json").write_text(json.dumps({
            "pid": stranger.pid, "started": stranger_started - 1, "since": time.time(),
            "children": {"w1": {"pid": child.pid, "started": started},
                         "w2": {"pid": stranger.pid, "started": stranger_started + 1}},
        }))
        env = {**os.environ, "SWARM_HOME": str(home), "SWARM_REDIS_URL": "redis://127.0.0.1:1/0"}
        ps = CliRunner().invoke(app, ["ps", "--json"], env=env)
        assert json.loads(ps.stdout) == [{"name": "w1", "pid": child.pid, "alive": True},
                                         {"name": "w2", "pid": stranger.pid, "alive": False}]
        # In a process of its own: in this one, `down` would reap `child` (ours) before the test sees how it ended.
        down = subprocess.run([sys.executable, "-m", "swarm", "down", "--timeout", "10"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=30, check=False)
        assert (down.returncode, down.stdout, down.stderr) == (0, "swarm stopped\n", "")
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert stranger.poll() is None  # never signalled
        assert not (home / "up.json").exists()
        again = CliRunner().invoke(app, ["down"], env=env)
        assert (again.exit_code, again.stdout) == (0, "nothing to stop: no `swarm up` is running here\n")
    finally:
        for proc in (stranger, child):
            proc.kill()
            proc.wait()
