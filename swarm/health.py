"""A swarm's figures read from Redis (the census), and the verdict on whether the swarm is healthy.

Board-wide figures (tasks by state and kind, agents by liveness, stream lengths, consumer lag and
pending counts, dead letters, the leader, repetition signals) live in Redis, so they are read from
there rather than counted in one process: the metrics exporter reads them at scrape time, and
`swarm stats` and `swarm health` read the very same `Snapshot`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

from redis.asyncio import Redis

from swarm.board import STATES, TERMINAL, Board
from swarm.captain import Leader
from swarm.connection import doing, text
from swarm.inbox import GROUP_PREFIX as MAIL_GROUPS
from swarm.keys import Keys
from swarm.protocol import now_ms
from swarm.registry import Registry
from swarm.settings import Settings

ALL_STATES: tuple[str, ...] = STATES
LIVE_STATES: tuple[str, ...] = tuple(s for s in STATES if s not in TERMINAL)
RECENT_DONE = 500
"""Finished tasks whose created -> done time `Snapshot.lifecycle` summarises."""


@dataclass(frozen=True, slots=True)
class Group:
    """One consumer group on one stream: how far behind it is and what it has in flight."""

    stream: str
    group: str
    consumers: int
    pending: int
    lag: int | None
    """Entries not yet delivered to the group; None when Redis cannot tell (after deletions)."""
    stalled: bool = False
    """It holds entries (pending, or not yet delivered) and no consumer reads it: it has none, or none
    has read for `reclaim_idle_ms`. What a reader that died for good leaves, such as the group of a
    `swarm tail` killed before tail stopped reading through groups. Never said of the mail groups
    (`inbox-reader:*`): those are read at an agent's turn boundaries, not continuously."""


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream of the swarm: entries kept now and ever added."""

    stream: str
    length: int
    added: int


@dataclass
class Snapshot:
    """Board-wide figures of one swarm at one instant (`at`, ms)."""

    swarm: str
    at: int
    tasks: dict[str, int]
    live_by_kind: dict[str, dict[str, int]]
    """state -> kind -> count, for the states a task can still leave (terminal ones only grow)."""
    agents: dict[str, int]
    leader: Leader
    streams: list[Stream]
    groups: list[Group]
    dead_letters: int
    expired_leases: int
    """Owned tasks whose lease has run out and that nobody has reclaimed yet (the captain does at once)."""
    signals: dict[str, dict[str, int]]
    """scope (agent, swarm) -> {"open", "closed", "coalesced"}: signals kept and the messages they stand for."""
    lifecycle: dict[str, float] = field(default_factory=dict)
    """created -> done seconds of the last `RECENT_DONE` finished tasks: n, p50, p95, max (when asked for)."""
    spend: dict[str, float] = field(default_factory=dict)
    """Reported spend and budgets: `swarm`, `agent:<name>`, `tokens:...` and `budget:...` (Board.spend)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`swarm stats --json`)."""
        return asdict(self)


class Census:
    """Reads a `Snapshot` from Redis. Keep one per process: it remembers task kinds (which never
    change), so a refresh asks Redis only for the kinds of tasks it has not seen yet."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.registry = Registry(redis, settings)
        self._kinds: dict[str, str] = {}

    async def take(self, *, lifecycle: bool = False) -> Snapshot:
        """Every figure now; `lifecycle` adds the recent created -> done durations (for `swarm stats`)."""
        agents = await self.registry.all()
        liveness = dict.fromkeys(("alive", "stale", "gone"), 0)
        for info in agents:
            liveness[info.liveness] += 1
        names = [self.keys.bus, self.keys.captain, self.keys.events, self.keys.dlq]
        names += [self.keys.inbox(a.card.name) for a in agents]
        names += sorted({self.keys.role(r) for a in agents for r in a.card.roles})
        keys = self.keys
        with doing("reading swarm figures"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for state in ALL_STATES:
                    pipe.zcard(keys.state(state))
                for state in LIVE_STATES:
                    pipe.zrange(keys.state(state), 0, -1)
                pipe.get(keys.leader)
                pipe.pttl(keys.leader)
                pipe.get(keys.epoch)
                pipe.zcount(keys.leases, "-inf", now_ms())
                for name in names:
                    pipe.exists(name)
                rows = await pipe.execute()
        counts = dict(zip(ALL_STATES, (int(v) for v in rows[: len(ALL_STATES)]), strict=True))
        at = len(ALL_STATES)
        live_ids = {state: [text(i) for i in rows[at + n]] for n, state in enumerate(LIVE_STATES)}
        at += len(LIVE_STATES)
        leader = Leader.from_lease(rows[at], rows[at + 1], rows[at + 2])
        expired = int(rows[at + 3])
        present = [name for name, exists in zip(names, rows[at + 4 :], strict=True) if exists]
        streams, groups = await self._streams(present)
        return Snapshot(
            swarm=self.settings.name, at=now_ms(), tasks=counts, live_by_kind=await self._by_kind(live_ids),
            agents=liveness, leader=leader, streams=streams, groups=groups,
            dead_letters=next((s.length for s in streams if s.stream == "dlq"), 0), expired_leases=expired,
            signals=await self._signals(), lifecycle=await self._lifecycle() if lifecycle else {},
            spend=await Board(self.redis, self.settings).spend(),
        )

    async def _by_kind(self, live_ids: dict[str, list[str]]) -> dict[str, dict[str, int]]:
        unknown = [i for ids in live_ids.values() for i in ids if i not in self._kinds]
        if unknown:
            with doing("reading task kinds"):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for task_id in unknown:
                        pipe.hget(self.keys.task(task_id), "kind")
                    kinds = await pipe.execute()
            self._kinds.update((i, text(k)) for i, k in zip(unknown, kinds, strict=True) if k is not None)
        live = {i for ids in live_ids.values() for i in ids}
        # Forget finished tasks: the cache stays as large as the live work, not the board's history.
        self._kinds = {i: k for i, k in self._kinds.items() if i in live}
        out: dict[str, dict[str, int]] = {}
        for state, ids in live_ids.items():
            per = out.setdefault(state, {})
            for task_id in ids:
                kind = self._kinds.get(task_id)
                if kind is not None:
                    per[kind] = per.get(kind, 0) + 1
        return out

    async def _streams(self, names: list[str]) -> tuple[list[Stream], list[Group]]:
        with doing("reading stream and consumer-group figures"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.xinfo_stream(name)
                    pipe.xinfo_groups(name)
                # A stream deleted between EXISTS and here answers with an error: skip it, not fail.
                rows = await pipe.execute(raise_on_error=False)
        streams: list[Stream] = []
        groups: list[Group] = []
        for n, name in enumerate(names):
            info, infos = rows[2 * n], rows[2 * n + 1]
            if isinstance(info, Exception) or isinstance(infos, Exception):
                continue
            short = self.keys.short(name)
            streams.append(Stream(short, int(info["length"]), int(info.get("entries-added") or info["length"])))
            for g in cast(list[dict[str, Any]], infos):
                lag = g.get("lag")
                groups.append(Group(short, text(g["name"]), int(g["consumers"]), int(g["pending"]),
                                    None if lag is None else int(lag)))
        return streams, await self._stalled(groups)

    async def _stalled(self, groups: list[Group]) -> list[Group]:
        """`groups`, those that hold entries no consumer reads marked `stalled`: a consumer's `idle`
        is the time since it last tried to read, which a live one's blocking reads keep short."""
        holding = [g for g in groups if (g.pending or g.lag != 0) and not g.group.startswith(MAIL_GROUPS)]
        asked = [g for g in holding if g.consumers]
        with doing("reading consumer idle times"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for g in asked:
                    pipe.xinfo_consumers(self.keys.stream(g.stream), g.group)
                rows = await pipe.execute(raise_on_error=False) if asked else []
        idle = self.settings.reclaim_idle_ms
        stalled = {(g.stream, g.group) for g in holding if not g.consumers}
        for g, consumers in zip(asked, rows, strict=True):
            if not isinstance(consumers, Exception) and all(int(c["idle"]) >= idle for c in consumers):
                stalled.add((g.stream, g.group))
        return [replace(g, stalled=True) if (g.stream, g.group) in stalled else g for g in groups]

    async def _signals(self) -> dict[str, dict[str, int]]:
        """Kept repetition signals per scope, and the messages they stand for (their counts).
        The fields read are the ones `Keys.repetition_signals` documents: `<id>` the fixed JSON,
        `<id>|c` the count, `<id>|o` whether it is open."""
        keys = self.keys
        out = {scope: {"open": 0, "closed": 0, "coalesced": 0} for scope in ("agent", "swarm")}
        with doing("reading repetition signals"):
            ids = [text(i) for i in cast(list[bytes], await self.redis.zrange(keys.repetition_index, 0, -1))]
            if not ids:
                return out
            values = await self.redis.hmget(keys.repetition_signals, [f"{i}{s}" for i in ids for s in ("", "|c", "|o")])
        for n in range(len(ids)):
            fixed, count, is_open = values[3 * n : 3 * n + 3]
            if fixed is None:  # evicted between the two reads
                continue
            scope = "swarm" if json.loads(fixed).get("scope") == "swarm" else "agent"
            out[scope]["open" if int(is_open or 0) else "closed"] += 1
            out[scope]["coalesced"] += int(count or 0)
        return out

    async def _lifecycle(self) -> dict[str, float]:
        with doing("reading finished tasks"):
            ids = cast(list[bytes], await self.redis.zrange(self.keys.state("done"), -RECENT_DONE, -1))
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.keys.task(text(task_id)), ["created", "updated"])
                rows = await pipe.execute()
        spans = sorted((int(u) - int(c)) / 1000 for c, u in rows if c is not None and u is not None)
        if not spans:
            return {"n": 0}
        p95 = spans[min(len(spans) - 1, int(len(spans) * 0.95))]
        return {"n": len(spans), "p50": statistics.median(spans), "p95": p95, "max": spans[-1]}


# --- the verdict ------------------------------------------------------------------------------

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    """One health check: what was checked, its status, and a sentence saying why."""

    name: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """What `swarm health` tolerates before it calls the swarm unhealthy."""

    min_agents: int = 1
    max_lag: int = 10_000
    max_dead_letters: int | None = None
    """None: dead letters only warn; a number: more than that fails."""


def checks(snap: Snapshot, limits: Limits) -> list[Check]:
    """The captain, agents, lag and dead-letter checks of a snapshot (the server check is the caller's:
    without a server there is no snapshot)."""
    out: list[Check] = []
    lead = snap.leader
    if lead.instance is None:
        out.append(Check("captain", "fail", f"no captain leads (last epoch {lead.last_epoch}); "
                                            "start one with `swarm captain run`"))
    else:
        out.append(Check("captain", "ok", f"{lead.instance} leads, epoch {lead.epoch}"))
    a = snap.agents
    summary = f"{a['alive']} alive, {a['stale']} stale, {a['gone']} gone"
    if a["alive"] < limits.min_agents:
        out.append(Check("agents", "fail", f"{summary}; at least {limits.min_agents} must be alive: "
                                           "start one with `swarm agent run --name NAME --can CAPS`"))
    else:
        out.append(Check("agents", "ok", summary))
    behind = [g for g in snap.groups if g.lag is not None and g.lag > limits.max_lag]
    stalled = [g for g in snap.groups if g.stalled]
    if behind:
        worst = max(behind, key=lambda g: g.lag or 0)
        out.append(Check("lag", "fail", f"group {worst.group} on {worst.stream} is {worst.lag} entries behind "
                                        f"(limit {limits.max_lag}); is its consumer running?"))
    elif stalled:
        worst = max(stalled, key=lambda g: (g.lag or 0) + g.pending)
        more = f" ({len(stalled) - 1} more group(s) likewise)" if len(stalled) > 1 else ""
        lag = "?" if worst.lag is None else worst.lag
        out.append(Check("lag", "warn", f"group {worst.group} on {worst.stream} is {lag} entries behind with "
                                        f"{worst.pending} pending, and no consumer reads it{more}; if its reader "
                                        "is gone for good, remove the group: XGROUP DESTROY "
                                        f"{Keys(snap.swarm).stream(worst.stream)} {worst.group}"))
    else:
        most = max((g.lag or 0 for g in snap.groups), default=0)
        pending = sum(g.pending for g in snap.groups)
        out.append(Check("lag", "ok", f"at most {most} entries behind, {pending} pending"))
    dead = snap.dead_letters
    detail = f"{dead} dead letter(s); `swarm dlq list` shows them"
    if limits.max_dead_letters is not None and dead > limits.max_dead_letters:
        out.append(Check("dead_letters", "fail", f"{detail} (limit {limits.max_dead_letters})"))
    else:
        out.append(Check("dead_letters", "warn" if dead else "ok", detail if dead else "no dead letters"))
    if snap.expired_leases:
        out.append(Check("leases", "warn", f"{snap.expired_leases} task(s) past their lease and not reclaimed yet; "
                                           "the leading captain reclaims them"))
    else:
        out.append(Check("leases", "ok", "no task is past its lease"))
    return out
