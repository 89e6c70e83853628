"""`swarm health` and `swarm stats`: exit 0 on a healthy swarm, 1 with the reason when the captain is
down, no agent is alive, a group lags, or Redis cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import pytest
import structlog
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.captain import Captain
from swarm.cli import app
from swarm.connection import open_redis
from swarm.protocol import StatusBody, message
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings

T = TypeVar("T")


class Cli(Protocol):
    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result: ...


def sync(settings: Settings, fn: Callable[[Redis], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_redis(settings) as redis:
            return await fn(redis)

    return anyio.run(go)


@pytest.fixture
def cli(settings: Settings) -> Cli:
    sync(settings, lambda r: r.flushdb())
    assert settings.redis_url
    base = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home)}

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        try:
            return CliRunner().invoke(app, list(args), env={**base, **(env or {})})
        finally:
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()

    return invoke


def healthy_swarm(settings: Settings) -> None:
    """A leading captain and one live agent."""

    async def go(redis: Redis) -> None:
        await Registry(redis, settings).register(AgentCard(name="a1", capabilities=("audit",)), "i-1")
        assert await Captain(redis, settings, instance="cap-1").elect() == 1

    sync(settings, go)


def checks(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return {c["name"]: (c["status"], c["detail"]) for c in data["checks"]} | {"healthy": data["healthy"]}


def test_health_exits_0_on_a_healthy_swarm(cli: Cli, settings: Settings) -> None:
    healthy_swarm(settings)
    result = cli("health", "--json")
    assert result.exit_code == 0, result.output
    found = checks(result)
    assert found["healthy"] is True
    assert found["server"][0] == "ok"
    assert found["server"][1].startswith("valkey ")
    assert found["captain"] == ("ok", "cap-1 leads, epoch 1")
    assert found["agents"] == ("ok", "1 alive, 0 stale, 0 gone")
    assert found["lag"] == ("ok", "at most 0 entries behind, 0 pending")
    assert found["dead_letters"] == ("ok", "no dead letters")
    assert found["leases"] == ("ok", "no task is past its lease")
    human = cli("health")
    assert human.exit_code == 0
    assert "captain       cap-1 leads, epoch 1" in human.stdout


def test_health_fails_with_the_reason_when_no_captain_leads(cli: Cli, settings: Settings) -> None:
    healthy_swarm(settings)
    sync(settings, lambda r: Captain(r, settings, instance="cap-1").resign())  # the captain went down
    result = cli("health", "--json")
    assert result.exit_code == 1
    found = checks(result)
    assert found["healthy"] is False
    assert found["captain"] == ("fail", "no captain leads (last epoch 1); start one with `swarm captain run`")
    assert found["agents"][0] == "ok"
    human = cli("health")
    assert human.exit_code == 1
    assert human.stderr == ("unhealthy: captain: no captain leads (last epoch 1); start one with "
                            "`swarm captain run`\n")


def test_health_fails_when_redis_is_unreachable(cli: Cli) -> None:
    result = cli("health", "--json", env={"SWARM_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["healthy"] is False
    [server] = data["checks"]
    assert (server["name"], server["status"]) == ("server", "fail")
    assert server["detail"].startswith("Redis unreachable while checking redis://127.0.0.1:1/0: ")
    assert server["detail"].endswith("; check SWARM_REDIS_URL or run `swarm server status`")
    human = cli("health", env={"SWARM_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert human.exit_code == 1
    assert human.stderr.startswith("unhealthy: server: Redis unreachable while checking redis://127.0.0.1:1/0: ")


def test_health_never_starts_the_embedded_server(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    result = cli("health", "--json", env={"SWARM_REDIS_URL": "", "SWARM_HOME": str(home)})
    assert result.exit_code == 1
    assert json.loads(result.stdout)["checks"] == [{
        "name": "server", "status": "fail",
        "detail": f"no embedded server runs under {home.resolve()}; `swarm server start` starts one "
                  "(or set SWARM_REDIS_URL)",
    }]
    assert not home.exists()


def test_health_limits_agents_lag_and_dead_letters(cli: Cli, settings: Settings) -> None:
    healthy_swarm(settings)

    async def backlog(redis: Redis) -> None:
        bus = Bus(redis, settings)
        await bus.consumer("slow", "c1", [bus.keys.bus], start="$").setup()
        await bus.publish_many([message(StatusBody(text=f"n{i}"), sender="a1") for i in range(5)])
        await redis.xadd(bus.keys.dlq, {"reason": "test"})

    sync(settings, backlog)
    found = checks(cli("health", "--json", "--max-lag", "4"))
    assert found["lag"] == ("fail", "group slow on bus is 5 entries behind (limit 4); is its consumer running?")
    assert found["dead_letters"] == ("warn", "1 dead letter(s); `swarm dlq list` shows them")
    assert found["healthy"] is False
    result = cli("health", "--json", "--max-dead-letters", "0", "--min-agents", "2")
    assert result.exit_code == 1
    found = checks(result)
    assert found["lag"] == ("warn", "group slow on bus is 5 entries behind with 0 pending, and no consumer reads it; "
                                    "if its reader is gone for good, remove the group: XGROUP DESTROY "
                                    "swarm:{test}:bus slow")
    assert found["dead_letters"] == ("fail", "1 dead letter(s); `swarm dlq list` shows them (limit 0)")
    assert found["agents"] == ("fail", "1 alive, 0 stale, 0 gone; at least 2 must be alive: start one with "
                                       "`swarm agent run --name NAME --can CAPS`")
    assert cli("health", "--json").exit_code == 0  # one dead letter only warns by default


def test_health_warns_of_a_group_that_holds_entries_no_consumer_reads(cli: Cli, settings: Settings) -> None:
    healthy_swarm(settings)

    async def dead_reader(redis: Redis) -> None:
        # What a `swarm tail` killed by SIGTERM left before tail read without a group: a group whose
        # one consumer read once and never again, while the stream goes on.
        bus = Bus(redis, settings)
        await redis.xgroup_create(bus.keys.bus, "tail-01OLD", id="$", mkstream=True)
        await bus.publish(message(StatusBody(text="read"), sender="a1"))
        await redis.xreadgroup("tail-01OLD", "tail", {bus.keys.bus: ">"}, count=1)
        await bus.publish_many([message(StatusBody(text=f"n{i}"), sender="a1") for i in range(3)])

    sync(settings, dead_reader)
    # Its consumer read a moment ago: within reclaim_idle_ms (30 s) it may be a live one.
    assert checks(cli("health", "--json"))["lag"] == ("ok", "at most 3 entries behind, 1 pending")
    anyio.run(anyio.sleep, 0.3)
    result = cli("health", "--json", env={"SWARM_RECLAIM_IDLE_MS": "200"})
    assert result.exit_code == 0  # a warning: the swarm works, but something reads nothing
    assert checks(result)["lag"] == (
        "warn", "group tail-01OLD on bus is 3 entries behind with 1 pending, and no consumer reads it; if its "
                "reader is gone for good, remove the group: XGROUP DESTROY swarm:{test}:bus tail-01OLD")


def test_stats_json_and_table(cli: Cli, settings: Settings) -> None:
    healthy_swarm(settings)

    async def work(redis: Redis) -> None:
        board = Board(redis, settings)
        for kind in ("audit", "audit", "docs"):
            await board.create(TaskSpec(kind=kind, title="t"))
        task = await board.claim_next("a1", ["audit"])
        assert task is not None
        await board.complete(task.id, task.token, "ok", agent=task.owner or "")

    sync(settings, work)
    result = cli("stats", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tasks"] == {"open": 2, "assigned": 0, "running": 0, "blocked": 0, "done": 1, "failed": 0,
                             "cancelled": 0}
    assert data["live_by_kind"]["open"] == {"audit": 1, "docs": 1}
    assert data["agents"] == {"alive": 1, "stale": 0, "gone": 0}
    assert data["leader"]["instance"] == "cap-1"
    assert data["lifecycle"]["n"] == 1
    assert {s["stream"]: s["added"] for s in data["streams"]}["events"] == 5  # 3 created, claimed, done
    table = cli("stats")
    assert table.exit_code == 0
    assert "captain: cap-1 (epoch 1)" in table.stdout
    assert "audit 1, docs 1" in table.stdout
