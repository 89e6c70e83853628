"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0, every: float = 0.02) -> Any:
    """Poll `check` until it returns something truthy and return that; fail after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            value = await check()
            if value:
                return value
            await anyio.sleep(every)
