"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from swarm.settings import Settings

if TYPE_CHECKING:
    from typer.testing import Result

    from swarm.agent import Agent

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = "tests/procs/agent_handlers.py"


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0, every: float = 0.02) -> Any:
    """Poll `check` until it returns something truthy and return that; fail after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            value = await check()
            if value:
                return value
            await anyio.sleep(every)


def spawn(
    fast: Settings, name: str, handler: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real `swarm agent run` process against the test server; `handler` is a function of
    tests/procs/agent_handlers.py or a `cmd:` template."""
    assert fast.redis_url is not None
    full_env = {**os.environ, "SWARM_REDIS_URL": fast.redis_url, "SWARM_NAME": fast.name,
                "SWARM_LEASE_S": str(fast.lease_s), "SWARM_HEARTBEAT_S": str(fast.heartbeat_s),
                "SWARM_HOME": str(fast.home), **(env or {})}
    fast.home.mkdir(parents=True, exist_ok=True)
    with (fast.home / f"{name}.log").open("ab") as errors:  # read it when a test fails
        return subprocess.Popen(
            [sys.executable, "-m", "swarm", "agent", "run", "--name", name, "--can", "work",
             "--handler", handler if handler.startswith("cmd:") else f"{HANDLERS}:{handler}", *extra],
            cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=errors,
        )


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[anyio.Event]:
    """Run `agent` until the block ends (or its `stop` is set), then let it shut down."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run, stop)
        yield stop
        stop.set()


def embedded_cli(home: Path, name: str, *args: str, **extra: str | None) -> Result:
    """Run `swarm ARGS` for swarm `name` with the embedded server under `home` (no SWARM_REDIS_URL,
    no SWARM_TLS_*); `extra`: more environment (None unsets)."""
    from typer.testing import CliRunner  # noqa: PLC0415 (only the CLI tests need typer's runner)

    from swarm.cli import app  # noqa: PLC0415

    env: dict[str, str | None] = {
        "SWARM_HOME": str(home), "SWARM_REDIS_URL": None, "SWARM_NAME": name, "SWARM_LOG_LEVEL": "warning",
        "SWARM_TLS_CA": None, "SWARM_TLS_CERT": None, "SWARM_TLS_KEY": None, **extra,
    }
    return CliRunner().invoke(app, list(args), env=env)
