"""Fixtures: a real Valkey for the session (the embedded binary), flushed before each test.

Set SWARM_TEST_REDIS_URL to run against another server instead (it is flushed too), a cluster
included (`scripts/test --cluster`); tests that need a cluster ask for `cluster_url`.
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
from swarm.localcluster import LocalCluster
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
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cluster of 3 masters and 3 replicas: SWARM_TEST_CLUSTER_URL (`scripts/test --cluster` sets it),
    or a local one started for the first test that asks (a few seconds) and stopped after the session."""
    url = os.environ.get("SWARM_TEST_CLUSTER_URL")
    if url:
        yield url
        return
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield local.up().url
    finally:
        local.down()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SWARM_TEST_REDIS_URL (a cluster node too: `open_redis` finds out, and the `redis` fixture's
    FLUSHDB then runs on every master), or an embedded server for the session."""
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
