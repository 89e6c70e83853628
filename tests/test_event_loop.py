"""The CLI's processes run on uvloop unless SWARM_UVLOOP says otherwise."""

from __future__ import annotations

import asyncio

from swarm.cli.common import run_loop
from swarm.settings import Settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_cli_loop_is_uvloop_by_default_and_asyncio_when_switched_off() -> None:
    assert Settings().uvloop is True
    assert run_loop(Settings(), _loop_module).startswith("uvloop")
    assert run_loop(Settings(uvloop=False), _loop_module) == "asyncio.unix_events"
