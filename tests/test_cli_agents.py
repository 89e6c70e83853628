"""`swarm agents`: cards shown as registered, gone agents hidden after SWARM_FORGET_AGENTS_AFTER and
forgotten with `--prune` (in-process CLI against the test server)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.cli import app
from swarm.connection import open_redis
from swarm.protocol import now_ms
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings

DAY_MS = 86_400_000


def swarm(settings: Settings, *args: str, **env: str) -> Result:
    assert settings.redis_url is not None
    try:
        return CliRunner().invoke(app, list(args), env={
            "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home), **env,
        })
    finally:
        structlog.reset_defaults()  # the command pointed structlog at the runner's stderr, closed now


def seed(settings: Settings, fn: Callable[[Redis, Registry], Awaitable[None]]) -> None:
    """Run `fn` against the test server (flushed first) on a short event loop of its own: the CLI,
    run in this process, runs its own loop, so these tests are plain functions."""

    async def go() -> None:
        async with open_redis(settings) as redis:
            await redis.flushdb()
            await fn(redis, Registry(redis, settings))

    anyio.run(go)


def names(settings: Settings) -> list[str]:
    async def go() -> list[str]:
        async with open_redis(settings) as redis:
            return [a.card.name for a in await Registry(redis, settings).all()]

    return anyio.run(go)


def rows(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_a_card_without_host_or_pid_shows_none_not_the_readers_own(settings: Settings) -> None:
    # An agent in another language registered without host and pid: `swarm agents --json` used to
    # show the CLI's own hostname and pid for it (the card model's defaults).
    async def cards(redis: Redis, registry: Registry) -> None:
        await redis.hset(registry.keys.agents, "node-1", json.dumps({"name": "node-1", "capabilities": ["docs"]}))
        await redis.zadd(registry.keys.agent_seen, {"node-1": now_ms()})
        await registry.register(AgentCard(name="py-1", host="box-7", pid=4242, started_at=1_700_000_000_000), "i-1")

    seed(settings, cards)
    found = {r["name"]: (r["host"], r["pid"], r["started_at"]) for r in rows(swarm(settings, "agents", "--json"))}
    assert found == {"node-1": (None, None, None), "py-1": ("box-7", 4242, 1_700_000_000_000)}
    assert socket.gethostname() != "box-7"
    assert os.getpid() != 4242
    human = swarm(settings, "agents").stdout
    assert "-/-" in human
    assert "box-7/4242" in human


def test_gone_agents_are_hidden_after_the_retention_and_pruned(settings: Settings) -> None:
    # Gone agents used to be listed forever (LAST SEEN "never"), with no way to remove them.
    async def agents(redis: Redis, registry: Registry) -> None:
        for name in ("alive-1", "left-1", "old-1"):
            await registry.register(AgentCard(name=name, started_at=now_ms() - 3 * DAY_MS), f"{name}.i")
        await registry.deregister("left-1", "left-1.i")  # left now: no heartbeat time kept, started 3 days ago
        await redis.zadd(registry.keys.agent_seen, {"old-1": now_ms() - 2 * DAY_MS})  # last heard of 2 days ago

    seed(settings, agents)

    assert [r["name"] for r in rows(swarm(settings, "agents", "--json"))] == ["alive-1"]
    human = swarm(settings, "agents").stdout
    assert human.endswith("2 agents gone longer than 1 day not shown (SWARM_FORGET_AGENTS_AFTER); "
                          "`swarm agents --prune` forgets gone agents\n")
    longer = rows(swarm(settings, "agents", "--json", SWARM_FORGET_AGENTS_AFTER=str(7 * 86_400)))
    assert [(r["name"], r["liveness"]) for r in longer] == [("alive-1", "alive"), ("left-1", "gone"), ("old-1", "gone")]

    pruned = swarm(settings, "agents", "--prune")
    assert (pruned.exit_code, pruned.stdout) == (0, "forgot 2 gone agents: left-1, old-1\n")
    assert names(settings) == ["alive-1"]
    assert rows(swarm(settings, "agents", "--prune", "--json")) == {"forgot": []}
    assert swarm(settings, "agents", "--prune").stdout == "no gone agents to forget\n"


def test_a_bad_retention_names_the_variable(settings: Settings) -> None:
    result = swarm(settings, "agents", SWARM_FORGET_AGENTS_AFTER="0")
    assert (result.exit_code, result.stderr) == (
        1, "error: SWARM_FORGET_AGENTS_AFTER: Input should be greater than 0\n")
