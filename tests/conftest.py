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
from pydantic import SecretStr
from redis.asyncio import Redis

from swarm.bus import Bus
from swarm.connection import client, open_redis
from swarm.identity import Identities, Role
from swarm.keys import Keys
from swarm.localcluster import LocalCluster
from swarm.server import EmbeddedServer
from swarm.settings import Settings

NOT_ON_CLUSTER = {
    "test_a_failure_report_that_meets_a_lost_connection_is_retried": (
        "its cuttable TCP link stands between the client and one node; a cluster client reaches every "
        "node directly, at the addresses CLUSTER SLOTS gives, around the link"),
    "test_wait_replicas_on_one_server_without_a_replica_waits_once_then_goes_on": (
        "every master of the test cluster has a replica, which answers WAIT (test_cluster.py waits on it)"),
}
"""Tests that cannot run on a cluster (`scripts/test --cluster`), with the reason."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every `async def` test runs under anyio (asyncio backend) without a per-test marker."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture(autouse=True)
def _not_on_cluster(request: pytest.FixtureRequest) -> None:
    """Skip the tests of `NOT_ON_CLUSTER` on a cluster, with their reason (a fixture: anyio's plugin
    remakes async test items after collection, dropping markers added to them there)."""
    reason = NOT_ON_CLUSTER.get(getattr(request.node, "originalname", ""))
    if reason and os.environ.get("SWARM_TEST_CLUSTER_URL"):
        pytest.skip(f"not on a cluster: {reason}")


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


@pytest.fixture
async def users(redis: Redis, settings: Settings) -> AsyncIterator[dict[str, Redis]]:
    """ACL users alice and bob (agents), cap (captain) and eve (viewer), each connected as itself;
    removed afterwards."""
    made = Identities(redis, Keys(settings.name))
    roles: dict[str, Role] = {"alice": "agent", "bob": "agent", "cap": "captain", "eve": "viewer"}
    clients: dict[str, Redis] = {}
    try:
        for name, role in roles.items():
            password = await made.add(name, role)
            clients[name] = client(settings.redis_url or "", settings.model_copy(
                update={"user": name, "password": SecretStr(password), "connect_retries": 0}))
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()
        for name in roles:
            if any(i.name == name for i in await made.all()):
                await made.remove(name)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A SWARM_HOME whose embedded server, if a test left one running, is stopped afterwards."""
    path = tmp_path / "swarm-home"
    yield path
    EmbeddedServer(path).stop()
