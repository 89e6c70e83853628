"""swarm on a real cluster (3 masters + 3 replicas, the `cluster_url` fixture): client selection, one
slot per swarm, keyless commands on the swarm's master, NOSCRIPT and failover, waiting for replicas,
and twenty swarms spread over the three masters at once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from swarm.agent import Agent, Context
from swarm.board import Board, Task, TaskSpec
from swarm.bus import Bus
from swarm.cluster import SwarmCluster, home_slot, split_options
from swarm.connection import open_redis
from swarm.errors import BackendError, ConfigError
from swarm.keys import Keys
from swarm.presence import named
from swarm.protocol import ChatBody, message
from swarm.registry import AgentCard
from swarm.settings import Settings
from tests.helpers import ROOT, eventually


@pytest.fixture
def on_cluster(cluster_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=cluster_url, name="test", home=tmp_path / ".swarm", reclaim_idle_ms=200,
                    reclaim_every_s=0.1, block_ms=50, max_deliveries=3)


@asynccontextmanager
async def cluster(settings: Settings) -> AsyncIterator[SwarmCluster]:
    async with open_redis(settings) as redis:
        assert isinstance(redis, SwarmCluster)
        yield redis


def spec(title: str) -> TaskSpec:
    return TaskSpec(kind="work", title=title)


def master_of(redis: SwarmCluster, swarm: str) -> str:
    """`host:port` of the master that owns the swarm's slot, as the cluster says (CLUSTER SLOTS)."""
    return str(redis.nodes_manager.get_node_from_slot(home_slot(swarm)).name)


async def test_a_node_of_a_cluster_gives_a_cluster_client_whose_keyless_commands_go_to_the_swarms_master(
    on_cluster: Settings,
) -> None:
    async with cluster(on_cluster) as redis:
        owner = master_of(redis, "test")
        assert redis.get_default_node().name == owner
        info = await redis.info("server")  # a keyless command: on the swarm's master
        assert f"127.0.0.1:{info['tcp_port']}" == owner
        assert int(await redis.execute_command("CLUSTER", "KEYSLOT", Keys("test").events)) == home_slot("test")
        assert len(redis.get_primaries()) == 3
        assert len(redis.get_replicas()) == 3


async def test_board_transitions_run_on_the_swarms_master_and_nowhere_else(on_cluster: Settings) -> None:
    async with cluster(on_cluster) as redis:
        await redis.flushdb()  # on every master
        board = Board(cast(Redis, redis), on_cluster)
        task, _ = await board.create(spec("one"))
        claimed = await board.claim_next("w1", ["work"])
        assert claimed is not None
        await board.complete(claimed.id, claimed.token, "ok", agent="w1")
        assert (await board.get(task.id)).state == "done"
        owner = master_of(redis, "test")
        for node in redis.get_primaries():
            with sync_redis.Redis(host=node.host, port=int(node.port)) as direct:
                keys = {k.decode() for k in direct.keys("swarm:{test}:*")}
            assert bool(keys) == (node.name == owner), node.name
            if node.name == owner:
                assert {Keys("test").events, Keys("test").task(task.id)} <= keys


async def test_scripts_flushed_from_every_master_are_loaded_again_for_calls_and_pipelines(on_cluster: Settings) -> None:
    # What a replica promoted by a failover looks like to the client: a master without the scripts.
    async with cluster(on_cluster) as redis:
        await redis.flushdb()
        board = Board(cast(Redis, redis), on_cluster)
        await board.create(spec("before"))
        assert await redis.script_flush()
        task, _ = await board.create(spec("after the flush"))  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA
        assert task.title == "after the flush"
        # Pipelined script calls (dead-lettering a batch) meet NOSCRIPT inside the pipeline.
        bus = Bus(cast(Redis, redis), on_cluster)
        stream = bus.keys.bus
        await bus.publish_many([message(ChatBody(text=f"m{i}"), sender="a1") for i in range(3)])
        await redis.xgroup_create(stream, "g", id="0")
        entries = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                       await redis.xreadgroup("g", "c", {stream: ">"}, count=3))
        ids = [entry_id.decode() for entry_id, _ in entries[0][1]]
        assert await redis.script_flush()
        dead = await bus.dead_letter_many(stream, "g", "c", [(i, "test", "chat") for i in ids])
        assert len(dead) == 3
        assert await redis.xlen(bus.keys.dlq) == 3


async def test_a_failover_of_the_swarms_master_is_followed_without_an_error(on_cluster: Settings) -> None:
    async with cluster(on_cluster) as redis:
        await redis.flushdb()
        assert await redis.client_list()  # (what the masters were, for the presence check below)
        board = Board(cast(Redis, redis), on_cluster)
        before, _ = await board.create(spec("before the failover"))
        old = master_of(redis, "test")
        for replica in redis.get_replicas():
            info = await redis.execute_command("INFO", "replication", target_nodes=replica)
            if f"{info['master_host']}:{info['master_port']}" == old:
                break
        # A manual failover: the replica takes the slots over once it has every write (no loss).
        assert await redis.execute_command("CLUSTER FAILOVER", target_nodes=replica)

        async def promoted() -> bool:
            info = await redis.execute_command("INFO", "replication", target_nodes=replica)
            return bool(info["role"] == "master")

        await eventually(promoted, within=15)
        # The client still maps the slot to the old master: MOVED, then it follows.
        after, _ = await board.create(spec("after the failover"))
        assert master_of(redis, "test") == replica.name
        assert redis.get_default_node().name == replica.name
        assert [t.id for t in await board.tasks()] == [before.id, after.id]
        assert await board.now_ms() > 0
        # Presence must not reap agents whose connections are still moving to the new master.
        with pytest.raises(BackendError, match=r"^Redis refused listing clients: the cluster's masters changed "
                                               r"\d+\.\ds ago \(a failover\); agents are reconnecting, so this "
                                               r"look waits until 5s have passed$") as refused:
            await redis.client_list()
        assert refused.value.code == "TRYAGAIN"
        # The old master knows it is a replica now, linked to the new one, before the next test
        # bootstraps a client from it (a node that still thinks it is master would hand out a stale map).
        old_node = next(n for n in redis.get_nodes() if n.name == old)

        async def demoted() -> bool:
            info = await redis.execute_command("INFO", "replication", target_nodes=old_node)
            if not (info["role"] == "slave" and info.get("master_link_status") == "up"):
                return False
            for node in redis.get_nodes():  # ...and every node's map says so (gossip has spread)
                view = await redis.execute_command("CLUSTER NODES", target_nodes=node)
                if "slave" not in str(view.get(old, {}).get("flags", "")):
                    return False
            return True

        await eventually(demoted, within=15)


async def test_wait_replicas_makes_each_transition_wait_for_a_replica_or_says_it_did_not(on_cluster: Settings) -> None:
    url = on_cluster.redis_url or ""
    waiting = on_cluster.model_copy(update={"redis_url": f"{url}?wait_replicas=1&wait_ms=2000"})
    async with cluster(waiting) as redis:
        await redis.flushdb()
        board = Board(cast(Redis, redis), waiting)
        for n in range(5):
            await board.create(spec(f"replicated {n}"))
        assert redis.replication.unreplicated == 0
    # Two replicas asked for, one exists: each transition waits wait_ms, then stands, counted.
    short = on_cluster.model_copy(update={"redis_url": f"{url}?wait_replicas=2&wait_ms=20"})
    async with cluster(short) as redis:
        board = Board(cast(Redis, redis), short)
        started = time.monotonic()
        task, _ = await board.create(spec("one replica short"))
        assert time.monotonic() - started >= 0.02
        assert redis.replication.unreplicated == 1
        assert (await board.get(task.id)).title == "one replica short"


async def test_wait_replicas_on_one_server_without_a_replica_waits_once_then_goes_on(
    settings: Settings, redis: Redis,
) -> None:
    waiting = settings.model_copy(update={"redis_url": f"{settings.redis_url}?wait_replicas=1&wait_ms=50"})
    async with open_redis(waiting) as own:
        board = Board(own, waiting)
        started = time.monotonic()
        first, _ = await board.create(spec("no replica to wait for"))
        assert time.monotonic() - started >= 0.05  # WAIT 1 50 came back with 0
        started = time.monotonic()
        second, _ = await board.create(spec("within the pause"))
        assert time.monotonic() - started < 0.05  # the next second does not wait again
        replication = own.replication  # type: ignore[attr-defined]
        assert replication.unreplicated == 2
    assert [t.id for t in await Board(redis, settings).tasks()] == [first.id, second.id]


def test_wait_options_are_checked() -> None:
    assert split_options("redis://h:1?wait_replicas=1&wait_ms=50&ssl_cert_reqs=none") == (
        "redis://h:1?ssl_cert_reqs=none", 1, 50)
    assert split_options("unix:///tmp/valkey.sock") == ("unix:///tmp/valkey.sock", 0, 100)
    with pytest.raises(ConfigError, match=r"^SWARM_REDIS_URL options \{'wait_replicas': 'one'\} must be whole "
                                          r"numbers, as in \?wait_replicas=1&wait_ms=100$"):
        split_options("redis://h:1?wait_replicas=one")


async def test_a_command_across_slots_is_refused_with_a_swarm_error(on_cluster: Settings) -> None:
    async with cluster(on_cluster) as redis:
        with pytest.raises(BackendError, match=r"^Redis refused running MGET: CROSSSLOT MGET - all keys must map "
                                               r"to the same key slot$") as refused:
            await redis.mget("swarm:{a}:x", "swarm:{b}:x")
        assert refused.value.code == "CROSSSLOT"


async def test_presence_sees_named_connections_on_every_master(on_cluster: Settings) -> None:
    async with cluster(on_cluster) as redis:
        agent = cast(SwarmCluster, named(cast(Redis, redis), "swarm:{test}:instance-1"))
        try:
            await agent.set("swarm:{test}:probe", "1")
            names = {c["name"] for c in await redis.client_list()}
            assert "swarm:{test}:instance-1" in names
        finally:
            await agent.aclose()
        names = {c["name"] for c in await redis.client_list()}
        assert "swarm:{test}:instance-1" not in names


async def test_twenty_swarms_spread_over_the_three_masters_and_run_at_once(on_cluster: Settings) -> None:
    swarms = [on_cluster.model_copy(update={"name": f"fleet-{n}", "heartbeat_s": 0.2}) for n in range(20)]
    working: set[str] = set()
    everyone = anyio.Event()

    async def handler(task: Task, ctx: Context) -> str:
        # A barrier: no task finishes until every swarm has one running.
        working.add(ctx.settings.name)
        if len(working) == len(swarms):
            everyone.set()
        await everyone.wait()
        return f"done in {ctx.settings.name}"

    async with AsyncExitStack() as stack:
        clients = {s.name: await stack.enter_async_context(cluster(s)) for s in swarms}
        await clients["fleet-0"].flushdb()
        boards = {s.name: Board(cast(Redis, clients[s.name]), s) for s in swarms}
        for s in swarms:
            await boards[s.name].create_many([spec(f"{s.name} task {i}") for i in range(5)])
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for s in swarms:
                card = AgentCard(name="worker", capabilities=("work",), concurrency=5)
                await tg.start(Agent(cast(Redis, clients[s.name]), s, card, handler).run, stop)

            async def all_done() -> bool:
                return [(await board.counts())["done"] for board in boards.values()] == [5] * len(boards)

            await eventually(all_done, within=30)
            stop.set()
        owners = {s.name: master_of(clients[s.name], s.name) for s in swarms}
        masters = {node.name: node for node in clients["fleet-0"].get_primaries()}
    assert set(owners.values()) == set(masters)  # every master holds some of the swarms
    for name, owner in owners.items():  # ... and each swarm's keys live on its own master only
        for node in masters.values():
            with sync_redis.Redis(host=node.host, port=int(node.port)) as direct:
                here = {k.decode() for k in cast(list[bytes], direct.keys(Keys(name).prefix.replace("{", "[{]") + "*"))}
                assert (Keys(name).events in here) == (node.name == owner), (name, node.name)
                assert bool(here) == (node.name == owner), (name, node.name)
    assert working == {s.name for s in swarms}  # and all twenty were working at once (the barrier)


def test_scripts_cluster_starts_reports_and_stops_a_local_cluster(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "scripts/cluster.py", *args, "--dir", str(tmp_path / "c")],
                              cwd=ROOT, capture_output=True, text=True, check=True, timeout=90)
        return done.stdout

    try:
        url = run("up").strip()
        assert url.startswith("redis://127.0.0.1:")
        status = run("status").splitlines()
        assert status[0] == url
        roles = [line.split()[4] for line in status[1:]]
        assert sorted(roles) == ["master"] * 3 + ["replica"] * 3
    finally:
        assert run("down").strip() == "stopped"
    assert not (tmp_path / "c").exists()
