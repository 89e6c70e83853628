"""Presence: which agent instances are connected right now, from the server's own client list.

Every agent instance names each of its connections `swarm:<swarm>:<instance>` (CLIENT SETNAME, sent
by redis-py as each connection opens) and records that name in its card (`connection`). When a
process dies, however it dies, the kernel closes its sockets and the server drops its connections at
once. A sweeper (the captain, and any agent that claims, one sweep per swarm per second through a
short lock) lists the server's clients; an instance that registered a connection name, has not
deregistered, and has no connection of that name in two looks `recheck_s` apart is dead: the `reap`
script marks it gone and returns its tasks to the board in one step, each counted as an attempt,
like an expired lease. Its tasks are back within about two seconds of the kill.

The lease stays the safety net. A paused process keeps its connections (so it is not reaped; its
lease runs out), and so does one behind a half-open connection until TCP gives up on it. Behind a
proxy that pools or hides client connections (twemproxy, Envoy's Redis filter, some managed
services), the names are not visible: set `SWARM_PRESENCE=false` there, and recovery takes the
lease. A server whose ACLs refuse CLIENT LIST turns sweeping off with one warning.
"""

from __future__ import annotations

from typing import cast

import anyio
import structlog
from redis.asyncio import ConnectionPool, Redis

from swarm.board import Board
from swarm.cluster import SwarmCluster
from swarm.errors import BackendError
from swarm.keys import Keys
from swarm.registry import Registry
from swarm.settings import Settings

log = structlog.get_logger("swarm.presence")

SWEEP_EVERY_S = 1.0
"""How often a sweep runs per swarm (whoever takes the lock runs it)."""


def named(redis: Redis, name: str) -> Redis:
    """A client like `redis` (same server, options and error boundary) with a pool of its own whose
    every connection is named `name` as it opens, reconnections included. Close it with `aclose`."""
    if isinstance(redis, SwarmCluster):  # no one pool: a pool per node, made by a twin client
        return cast(Redis, redis.named(name))
    pool = redis.connection_pool
    own = ConnectionPool(connection_class=pool.connection_class, max_connections=pool.max_connections,
                         **{**pool.connection_kwargs, "client_name": name})
    return type(redis).from_pool(own)


class Presence:
    """Finds agent instances whose connections are gone and reaps them (see the module doc)."""

    def __init__(self, redis: Redis, settings: Settings, *, recheck_s: float = 0.5) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.board = Board(redis, settings)
        self.registry = Registry(redis, settings)
        self.recheck_s = recheck_s
        self.enabled = settings.presence

    async def run(self) -> None:
        """Sweep every second until cancelled; Redis trouble is logged and the next sweep retries."""
        while self.enabled:
            try:
                await self.sweep()
            except BackendError as exc:
                log.warning("presence sweep failed", error=str(exc))
            await anyio.sleep(SWEEP_EVERY_S)

    async def sweep(self, *, force: bool = False) -> list[str]:
        """One sweep, when this process takes the swarm's sweep lock (`force`: regardless): the names
        of the agents reaped."""
        if not self.enabled:
            return []
        if not force and not await self.redis.set(self.keys.presence_lock, "1", nx=True,
                                                  px=int(SWEEP_EVERY_S * 900)):
            return []
        suspects = await self._missing()
        if not suspects:
            return []
        await anyio.sleep(self.recheck_s)  # a connection that was just reopening gets a moment
        still = await self._missing()
        reaped: list[str] = []
        for agent, instance in sorted(suspects.items()):
            if still.get(agent) == instance:
                moved = await self.board.reap(agent, instance)
                log.warning("agent's connections are gone; its tasks are back on the board",
                            agent=agent, instance=instance, tasks=moved)
                reaped.append(agent)
        return reaped

    async def _missing(self) -> dict[str, str]:
        """Registered, not deregistered agents (name -> instance) that named their connections and
        have none open now."""
        try:
            clients = await self.redis.client_list(_type="normal")
        except BackendError as exc:
            if exc.code not in ("NOPERM", "ERR"):
                raise
            self.enabled = False
            log.warning("the server refuses CLIENT LIST: dead agents are recovered by their leases only",
                        error=str(exc))
            return {}
        live = {str(c.get("name") or "") for c in clients}
        # The holder from the identity key, not the card: anyone with write access to the agents hash
        # could rewrite a card's connection to get a live agent reaped.
        holders = await self.registry.holders([info for info in await self.registry.all() if info.last_seen])
        return {name: h.instance for name, h in holders.items() if h.connection and h.connection not in live}
