"""The agent registry: each agent's card and heartbeats, and liveness derived from heartbeat age.

A (re)started agent registers and gets a new instance id; an older instance of the same name finds
its heartbeat refused and knows it was replaced. Liveness: `alive` within 3 heartbeat periods,
`stale` within 15, `gone` after that or once the agent deregistered.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from swarm.board import Board
from swarm.connection import doing
from swarm.keys import Keys
from swarm.protocol import AGENT_PATTERN, now_ms
from swarm.settings import Settings

log = structlog.get_logger("swarm.registry")

Liveness = Literal["alive", "stale", "gone"]
STALE_AFTER = 3
GONE_AFTER = 15


class AgentCard(BaseModel):
    """Who an agent is and what it can do, as it registered."""

    # Cards written by agents in other languages may carry fields of their own ("lang": "node"):
    # ignore them rather than let one card stop the captain.
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(pattern=AGENT_PATTERN)
    capabilities: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    concurrency: int = Field(1, ge=1, le=1024)
    prefetch: int = Field(0, ge=0, le=1024, description="Tasks the captain may hand it ahead of its free "
                                                       "workers: it owns up to concurrency + prefetch.")
    version: str = ""
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    started_at: int = Field(default_factory=now_ms)
    instance: str = ""
    budget_usd: float | None = Field(None, ge=0, description="The most this agent may spend (USD); the board "
                                                            "hands it nothing more once it has.")
    connection: str = ""
    """The name (CLIENT SETNAME) of this instance's connections: while none is open, the instance is
    dead and its tasks go back to the board (see `swarm.presence`). Empty: leases alone tell."""

    @property
    def capacity(self) -> int:
        """The most tasks the captain gives it at once: its workers' and those held ahead for them."""
        return self.concurrency + self.prefetch

    def can(self, caps: tuple[str, ...]) -> bool:
        """True when this agent has every capability in `caps` (or the wildcard `*`)."""
        # No capabilities declared means "anything", as `swarm agent run` without --can claims anything.
        return not self.capabilities or "*" in self.capabilities or set(caps) <= set(self.capabilities)


class Holder(BaseModel):
    """Which instance of an agent holds its name, and the name of that instance's connections: what
    register.lua writes to the agent's identity key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    instance: str
    connection: str = ""

    @classmethod
    def of(cls, card: AgentCard) -> Holder:
        """What a card says of its holder: all there is for agents registered before identity keys
        held it (and for a card written with a plain HSET)."""
        return cls(instance=card.instance, connection=card.connection)

    @classmethod
    def parse(cls, raw: bytes | str) -> Holder | None:
        """The holder in `raw`, or None when it is not one."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            return None


def parse_card(name: str, raw: bytes | str) -> AgentCard | None:
    """A registered card, or None (logged) when it does not validate: one malformed card, say from
    an agent in another language, must not stop the captain or `swarm agents` for everyone else."""
    try:
        return AgentCard.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        log.warning("agent card ignored: it does not validate", agent=name,
                    field=".".join(str(p) for p in first["loc"]), error=first["msg"])
        return None


class AgentInfo(BaseModel):
    """A card with what the registry knows now: last heartbeat and liveness."""

    model_config = ConfigDict(frozen=True)

    card: AgentCard
    last_seen: int
    liveness: Liveness


class Registry:
    """Agent cards and heartbeats of one swarm."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)

    async def register(self, card: AgentCard, instance: str, *, connection: str = "") -> AgentCard:
        """Record the card under a new instance id, replacing any earlier instance of the name; the
        tasks an earlier instance still held go back to the board in the same step (it is dead, or
        about to learn it was replaced). `connection`: the name of this instance's connections."""
        card = card.model_copy(update={"instance": instance, "connection": connection})
        released = await Board(self.redis, self.settings).register(card.name, instance, card.model_dump_json())
        if released:
            log.info("an earlier instance's tasks are back on the board", agent=card.name, tasks=released)
        return card

    async def heartbeat(self, name: str, instance: str, card: AgentCard | None = None) -> bool:
        """Refresh liveness; False when another instance has taken the name (this one should stop).
        With `card` (this instance's own), a card overwritten by someone else is written back."""
        holder, raw = await self._holder(name)
        if holder != instance:
            return False
        with doing("recording a heartbeat"):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.agent_seen, {name: now_ms()})
                if card is not None and raw is not None and parse_card(name, raw) != card:
                    log.warning("agent card was overwritten by someone else; writing it back", agent=name)
                    pipe.hset(self.keys.agents, name, card.model_dump_json())
                await pipe.execute()
        return True

    async def deregister(self, name: str, instance: str) -> None:
        """Mark the agent gone at once (graceful exit), if this instance still holds the name."""
        holder, _ = await self._holder(name)
        if holder == instance:
            with doing("deregistering an agent"):
                await self.redis.zadd(self.keys.agent_seen, {name: 0})

    async def _holder(self, name: str) -> tuple[str | None, bytes | None]:
        """The instance holding `name` (from its identity key, which register writes and, under ACL
        users, only the agent itself or a captain may write; else from its card), and the raw card."""
        with doing("reading an agent card"):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.identity(name))
                pipe.hget(self.keys.agents, name)
                held, raw = await pipe.execute()
        holder = Holder.parse(held) if held is not None else None
        if holder is None and raw is not None:
            card = parse_card(name, raw)
            holder = Holder.of(card) if card else None
        return (holder.instance if holder else None), raw

    async def holders(self, agents: list[AgentInfo]) -> dict[str, Holder]:
        """Who holds each of `agents`' names (see `_holder`), in one round trip."""
        if not agents:
            return {}
        with doing("reading agent identities"):
            values = await self.redis.mget([self.keys.identity(a.card.name) for a in agents])
        return {a.card.name: (v is not None and Holder.parse(v)) or Holder.of(a.card)
                for a, v in zip(agents, values, strict=True)}

    async def card(self, name: str) -> AgentCard | None:
        """The current card of `name`, or None."""
        with doing("reading an agent card"):
            raw = await self.redis.hget(self.keys.agents, name)
        return None if raw is None else parse_card(name, raw)

    async def all(self) -> list[AgentInfo]:
        """Every agent ever registered (until forgotten), by name, with liveness."""
        with doing("listing agents"):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.agents)
                pipe.zrange(self.keys.agent_seen, 0, -1, withscores=True)
                cards, seen = await pipe.execute()
        last = {name.decode(): int(score) for name, score in seen}
        now = now_ms()
        return [
            AgentInfo(card=card, last_seen=last.get(card.name, 0), liveness=self.liveness(last.get(card.name, 0), now))
            for name_b, raw in sorted(cards.items())
            if (card := parse_card(name_b.decode(), raw)) is not None
        ]

    @property
    def period_ms(self) -> float:
        """How often agents heartbeat (`Settings.heartbeat_period_s`), in ms."""
        return self.settings.heartbeat_period_s * 1000

    @property
    def alive_ms(self) -> int:
        """An agent heard from within this long is alive."""
        return int(STALE_AFTER * self.period_ms)

    def liveness(self, last_seen: int, now: int) -> Liveness:
        """`alive`, `stale` or `gone` for an agent last heard from at `last_seen` (ms; 0 = left)."""
        period = self.period_ms
        age = now - last_seen
        if last_seen == 0 or age > GONE_AFTER * period:
            return "gone"
        return "stale" if age > STALE_AFTER * period else "alive"

    async def forget(self, name: str) -> None:
        """Remove an agent's card entirely."""
        with doing("forgetting an agent"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.agents, name)
                pipe.zrem(self.keys.agent_seen, name)
                pipe.delete(self.keys.identity(name))
                await pipe.execute()
