"""The one Redis boundary: every command and pipeline of swarm's client comes out as a swarm error."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from swarm.board import Board
from swarm.bus import Bus
from swarm.connection import client, doing, open_redis
from swarm.errors import BackendError, ConnectionLost
from swarm.settings import Settings


async def test_no_command_escapes_the_boundary_on_a_dead_server(settings: Settings) -> None:
    dead = client("redis://127.0.0.1:1/0", settings.model_copy(update={"connect_retries": 0}))
    board = Board(dead, settings)
    try:
        with pytest.raises(ConnectionLost, match=r"^Redis unreachable while running XREAD: "):
            await dead.xread({"s": "0-0"}, block=10)  # a plain call, with no label around it
        with pytest.raises(ConnectionLost, match=r"^Redis unreachable while reading a task: .*"
                                                 r"check SWARM_REDIS_URL or run `swarm server status`$"):
            await board.get("t-1")
        pipe = dead.pipeline(transaction=False)
        pipe.get("a")
        with pytest.raises(ConnectionLost, match=r"^Redis unreachable while running PIPELINE: "):
            await pipe.execute()
        with pytest.raises(ConnectionLost, match=r"^Redis unreachable while running board script claim: "):
            await board.claim("a1", ["*"], 1)
    finally:
        await dead.aclose()


async def test_a_refusal_keeps_the_servers_code(redis: Redis, settings: Settings) -> None:
    await redis.set("plain", "x")
    with pytest.raises(BackendError) as caught:
        await redis.xadd("plain", {"m": "1"})
    assert caught.value.code == "WRONGTYPE"
    assert str(caught.value).startswith("Redis refused running XADD: WRONGTYPE ")
    await redis.xgroup_create("s", "g", mkstream=True)
    with doing("creating a group"), pytest.raises(BackendError) as twice:
        await redis.xgroup_create("s", "g", mkstream=True)
    assert (twice.value.code, str(twice.value)) == (
        "BUSYGROUP", "Redis refused creating a group: BUSYGROUP Consumer Group name already exists")


async def test_a_consumer_group_that_exists_is_reused(bus: Bus) -> None:
    consumer = bus.consumer("g", "c1", [bus.keys.bus])
    await consumer.setup()
    await consumer.setup()  # BUSYGROUP, by its code: what we want
    assert consumer.attached


async def test_a_password_never_reaches_an_error_message(settings: Settings) -> None:
    secret = "s3cret-Pa55"
    with pytest.raises(ConnectionLost) as exc:
        async with open_redis(settings.model_copy(update={"redis_url": f"redis://bob:{secret}@127.0.0.1:1/0",
                                                          "connect_retries": 0})):
            pass
    assert str(exc.value).startswith("Redis unreachable while connecting to redis://***@127.0.0.1:1/0: ")
    assert secret not in str(exc.value)
