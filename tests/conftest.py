"""Fixtures: a real Valkey for the session (the embedded binary), flushed before each test.

Set SWARM_TEST_REDIS_URL to run against another server instead (it is flushed too).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from swarm.bus import Bus
from swarm.connection import open_redis
from swarm.server import EmbeddedServer
from swarm.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every `async def` test runs under anyio (asyncio backend) without a per-test marker."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SWARM_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("valkey"))
    yield server.ensure().url
    server.stop()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Short timings so reclaim and retries happen within a test."""
    return Settings(
        redis_url=redis_url, name="test", home=tmp_path / ".swarm",
        reclaim_idle_ms=200, reclaim_every_s=0.1, block_ms=50, max_deliveries=3,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    async with open_redis(settings) as client:
        await client.flushdb()
        yield client


@pytest.fixture
async def bus(redis: Redis, settings: Settings) -> Bus:
    return Bus(redis, settings)
