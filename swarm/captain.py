"""The captain: assigns ready tasks to live agents, reaps expired leases, explains itself.

Event-driven: it wakes on board events and on messages to `@captain` (an agent registering,
finishing, going idle), and otherwise sleeps exactly until the next lease expiry or retry backoff
ends. Only the holder of the leader lease assigns; its epoch is checked inside the assign script,
so a deposed captain cannot assign even if it has not noticed yet.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import anyio
import structlog
from redis.asyncio import Redis

from swarm.board import Board, Ready, Task
from swarm.bus import Bus
from swarm.connection import doing, text
from swarm.errors import BackendError, NotLeader
from swarm.keys import FIELD_BYTES, Keys
from swarm.lua import Scripts
from swarm.presence import Presence
from swarm.protocol import new_id, now_ms
from swarm.recorder import Recorder
from swarm.registry import AgentCard, AgentInfo, Registry, parse_card
from swarm.settings import Settings

log = structlog.get_logger("swarm.captain")

RETENTION_EVERY_S = 60.0
"""How often the leading captain forgets finished tasks past `SWARM_KEEP_DONE`."""


@dataclass(frozen=True, slots=True)
class Slot:
    """An agent able to take more work right now."""

    info: AgentInfo
    load: int
    affinity: frozenset[str]


@dataclass(frozen=True, slots=True)
class Leader:
    """The captain holding the leader lease, if any (what `swarm captain status` and `swarm health` say)."""

    instance: str | None
    epoch: int | None
    lease_ms: int | None
    last_epoch: int

    @property
    def leading(self) -> bool:
        """True while some captain holds the lease."""
        return self.instance is not None

    @classmethod
    def from_lease(cls, value: bytes | None, ttl: int, last: bytes | None) -> Leader:
        """From what GET and PTTL of `Keys.leader` and GET of `Keys.epoch` return. The lease holds
        `<epoch>:<instance>`, as the `leader` script writes it."""
        last_epoch = int(last or 0)
        if value is None:
            return cls(None, None, None, last_epoch)
        epoch, _, instance = value.decode().partition(":")
        return cls(instance, int(epoch), max(0, int(ttl)), last_epoch)


QUIET_EVENTS = (b'"event":"assigned"', b'"event":"started"', b'"event":"claimed"', b'"event":"reassigned"')
"""Board events that neither add work nor free capacity: no reason to look at the board again."""


def _frees(fields: dict[bytes, bytes]) -> bool:
    """True for a board event that may make a task assignable (new, back to open, capacity freed)."""
    raw = fields.get(FIELD_BYTES, b"")
    return not any(quiet in raw for quiet in QUIET_EVENTS)


class Assignable(Protocol):
    """What `plan` reads of a task: a `Task`, or the `Ready` record of a round's view."""

    @property
    def id(self) -> str: ...
    @property
    def caps(self) -> tuple[str, ...]: ...
    @property
    def files(self) -> tuple[str, ...]: ...


A = TypeVar("A", bound=Assignable)


def plan(tasks: Sequence[A], slots: list[Slot]) -> list[tuple[A, str]]:
    """Deterministic matching of ready tasks (in claim order) to agents.

    For each task, among live agents with the capabilities and spare capacity: the one that worked
    on the most of the task's files, then the least loaded (relative to its capacity: concurrency
    plus prefetch), then by name. Pure: the same inputs always give the same plan.

    Built for a thousand agents: who can do a set of capabilities is worked out once per set, and a
    task without files (no affinity to weigh) takes the least loaded from a heap, not a scan.
    """
    load = [s.load for s in slots]
    names = [s.info.card.name for s in slots]
    room = [s.info.card.capacity for s in slots]
    eligible: dict[tuple[str, ...], list[int]] = {}
    heaps: dict[tuple[str, ...], list[tuple[float, str, int, int]]] = {}
    out: list[tuple[A, str]] = []
    for task in tasks:
        who = eligible.get(task.caps)
        if who is None:
            who = eligible[task.caps] = [i for i, s in enumerate(slots) if s.info.card.can(task.caps)]
        chosen = _least_loaded(heaps, task.caps, who, load, room, names) if not task.files else \
            _best_by_affinity(task, who, slots, load, room, names)
        if chosen is not None:
            load[chosen] += 1
            out.append((task, names[chosen]))
    return out


def _least_loaded(heaps: dict[tuple[str, ...], list[tuple[float, str, int, int]]], caps: tuple[str, ...],
                  who: list[int], load: list[int], room: list[int], names: list[str]) -> int | None:
    """The eligible agent with spare capacity and the lowest (load / concurrency, name); entries made
    stale by a load that changed since they were pushed are dropped as they surface."""
    heap = heaps.get(caps)
    if heap is None:
        heap = heaps[caps] = [(load[i] / room[i], names[i], i, load[i]) for i in who if load[i] < room[i]]
        heapq.heapify(heap)
    while heap:
        _, _, i, seen = heap[0]
        if seen != load[i]:  # its load changed (another caps group took it): push it again as it is now
            heapq.heapreplace(heap, (load[i] / room[i], names[i], i, load[i])) if load[i] < room[i] else \
                heapq.heappop(heap)
            continue
        heapq.heappop(heap)
        if load[i] + 1 < room[i]:
            heapq.heappush(heap, ((load[i] + 1) / room[i], names[i], i, load[i] + 1))
        return i
    return None


def _best_by_affinity(task: Assignable, who: list[int], slots: list[Slot], load: list[int], room: list[int],
                      names: list[str]) -> int | None:
    best: tuple[int, float, str] | None = None
    chosen: int | None = None
    for i in who:
        if load[i] >= room[i]:
            continue
        rank = (-len(slots[i].affinity.intersection(task.files)), load[i] / room[i], names[i])
        if best is None or rank < best:
            best, chosen = rank, i
    return chosen


class Captain:
    """One captain process; several may run, one leads (see `run`)."""

    def __init__(self, redis: Redis, settings: Settings, instance: str | None = None, *,
                 metrics: Recorder | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.board = Board(redis, settings)
        self.registry = Registry(redis, settings)
        self.metrics = metrics or Recorder()
        self.bus = Bus(redis, settings, metrics)
        self.instance = instance or new_id()
        self.epoch = 0
        self._scripts = Scripts(redis)
        self._wake = anyio.Event()
        self._cards: dict[str, AgentCard | None] = {}
        self.assigned = 0
        self.renewed = -math.inf
        """When (monotonic) the leader lease was last checked: leading or standing by, we knew."""

    def readiness(self) -> tuple[bool, str]:
        """What /readyz says: ready while leading or standing by, as of a recent lease check."""
        if time.monotonic() - self.renewed > self.settings.leader_lease_s:
            return False, "no leader-lease check succeeded within a lease period (is Redis reachable?)"
        return True, f"leading, epoch {self.epoch}" if self.leading else "standing by"

    @property
    def leading(self) -> bool:
        """True while this captain holds the leader lease."""
        return self.epoch > 0

    async def elect(self) -> int:
        """Acquire or renew the leader lease; returns our epoch, or 0 when another captain leads."""
        lease_ms = int(self.settings.leader_lease_s * 1000)
        with doing("renewing the leader lease"):
            epoch = int(await self._scripts["leader"](keys=[self.keys.leader, self.keys.epoch],
                                                      args=[self.instance, lease_ms]))
        if epoch and not self.epoch:
            log.info("leading", instance=self.instance, epoch=epoch)
            self.wake()
        elif self.epoch and not epoch:
            log.warning("lost the leader lease; standing by", instance=self.instance, epoch=self.epoch)
        self.epoch = epoch
        self.renewed = time.monotonic()
        self.metrics.on_leading(bool(epoch))
        return epoch

    async def resign(self) -> None:
        """Give the leader lease up now (clean shutdown), so a standby need not wait for it to expire."""
        with doing("releasing the leader lease"):
            await self._scripts["leader"](keys=[self.keys.leader, self.keys.epoch], args=[self.instance, "release"])
        self.epoch = 0

    def wake(self) -> None:
        """Ask the assign loop to look at the board now."""
        self._wake.set()

    async def tick(self) -> int | None:
        """Reap expired leases and assign what can be assigned. Returns when to look again (ms).

        One script call reads what a round needs (`Board.view`); a further page of the ready queue
        is read only when the head of the queue fits no free agent."""
        page = 256
        offset = 0
        wake_at: int | None = None
        while True:
            view = await self.board.view(offset, page, self.registry.alive_ms)
            if offset == 0:
                wake_at = view.wake_at
            now = now_ms()
            slots = [
                Slot(info=AgentInfo(card=card, last_seen=row.seen, liveness="alive"), load=row.load,
                     affinity=row.affinity)
                for row in view.agents
                if self.registry.liveness(row.seen, now) == "alive"
                if (card := self._card(row.name, row.card)) is not None
            ]
            free = sum(max(0, s.info.card.capacity - s.load) for s in slots)
            if free <= 0 or not view.tasks:
                return wake_at
            placed = await self._assign(plan(view.tasks, slots), slots)
            if placed < 0:  # deposed
                return wake_at
            if placed:  # the leases just granted run out at now + lease: look again then
                due = now_ms() + self.board.lease_ms
                wake_at = due if wake_at is None else min(wake_at, due)
            if placed >= free or not view.more:
                return wake_at
            offset += view.scanned - placed

    def _card(self, name: str, raw: str) -> AgentCard | None:
        """A registered card, parsed once per version of it (a round reads every agent's card)."""
        if raw not in self._cards:
            if len(self._cards) > 10 * 1024:  # cards of agents long gone: start again
                self._cards.clear()
            self._cards[raw] = parse_card(name, raw)
        return self._cards[raw]

    async def _assign(self, pairs: list[tuple[Ready, str]], slots: list[Slot]) -> int:
        """Assign each planned pair; the number placed, or -1 when this captain was deposed."""
        instances = {s.info.card.name: s.info.card.instance for s in slots}
        if not pairs:
            return 0
        try:  # the whole plan in one script call
            results = await self.board.assign_many(
                [(task.id, agent, instances[agent]) for task, agent in pairs], epoch=self.epoch)
        except NotLeader:
            self.epoch = 0
            log.warning("deposed while assigning; standing by", instance=self.instance)
            return -1
        placed = 0
        for task_id, error in results:
            if error is None:
                placed += 1
            else:  # claimed or cancelled meanwhile: fine, the next round sees the board as it is
                log.debug("task moved before assignment", task=task_id, reason=str(error))
        self.assigned += placed
        if placed:
            self.metrics.on_assigned(placed)
        return placed

    async def slots(self) -> list[Slot]:
        """Live agents with their current load and affinity (for `why`; a round uses `Board.view`)."""
        agents = [a for a in await self.registry.all() if a.liveness == "alive"]
        with doing("reading agent loads"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for a in agents:
                    pipe.scard(self.keys.owned(a.card.name))
                    pipe.smembers(self.keys.affinity(a.card.name))
                rows = await pipe.execute()
        return [
            Slot(info=a, load=int(rows[2 * i]), affinity=frozenset(text(f) for f in rows[2 * i + 1]))
            for i, a in enumerate(agents)
        ]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lead or stand by until cancelled; on the way out, hand the lease over."""
        structlog.contextvars.bind_contextvars(captain=self.instance)
        if self.settings.budget_usd is not None:  # SWARM_BUDGET_USD: the board enforces it from now on
            await self.board.set_budget(self.settings.budget_usd)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_lease)
                tg.start_soon(self._listen)
                tg.start_soon(Presence(self.redis, self.settings).run)
                tg.start_soon(self._retention)
                task_status.started()
                await self._assign_loop()
        finally:
            with anyio.CancelScope(shield=True):
                if self.leading:
                    await self.resign()

    async def _keep_lease(self) -> None:
        period = self.settings.leader_lease_s / 3
        while True:
            wait = period
            try:
                await self.elect()
                if not self.leading:
                    # Stand by until the leader's lease runs out, not a whole period: polling every
                    # period would let a dead leader's work wait up to 4/3 of a lease.
                    with doing("reading the leader lease"):
                        left_ms = int(await self.redis.pttl(self.keys.leader))
                    wait = min(period, max(left_ms, 0) / 1000 + 0.005)
            except BackendError as exc:
                log.warning("cannot reach Redis for the leader lease", error=str(exc))
                self.epoch = 0
                self.metrics.on_redis_error("captain")
                self.metrics.on_leading(False)
            await anyio.sleep(wait)

    async def _retention(self) -> None:
        """While leading, forget finished tasks older than `keep_done`, once a minute: Redis memory
        stays bounded however many tasks the swarm finishes."""
        while True:
            if self.leading:
                try:
                    purged = await self.board.purge(int(self.settings.keep_done * 1000))
                    if purged:
                        log.info("finished tasks past their retention forgotten", tasks=purged)
                except BackendError as exc:
                    log.warning("cannot purge finished tasks", error=str(exc))
            await anyio.sleep(RETENTION_EVERY_S)

    async def _listen(self) -> None:
        """Wake the assign loop on every board event and message to the captain (plain XREAD: the
        events are a trigger; the board itself is the truth, so none needs to be acked)."""
        streams: dict[Any, Any] = {s: await self.bus.last_id(s) for s in (self.keys.events, self.keys.captain)}
        while True:
            try:
                with doing("waiting for board events"):
                    reply = cast(list[Any], await self.redis.xread(streams, block=1000, count=1000))
            except BackendError as exc:
                log.warning("cannot reach Redis for events", error=str(exc))
                await anyio.sleep(0.5)
                continue
            wake = False
            for stream, entries in reply or []:
                name = text(stream)
                streams[name] = text(entries[-1][0])
                if self.metrics.enabled and self.leading and name == self.keys.events:
                    # Only the leader counts transitions, so summing over captains counts each once.
                    self.metrics.on_board_events(fields.get(FIELD_BYTES, b"") for _, fields in entries)
                wake = wake or name != self.keys.events or any(_frees(fields) for _, fields in entries)
            if wake:
                self.wake()

    async def _assign_loop(self) -> None:
        wake_at: int | None = None
        while True:
            timeout = math.inf if wake_at is None else max(0.0, (wake_at - now_ms()) / 1000)
            # Even with nothing scheduled, look again within a lease period: agents going stale
            # or coming back changes who can take work, and that is not a board event.
            with anyio.move_on_after(min(timeout, self.settings.leader_lease_s)):
                await self._wake.wait()
            self._wake = anyio.Event()
            if not self.leading:
                wake_at = None
                continue
            started = time.perf_counter()
            try:
                wake_at = await self.tick()
            except BackendError as exc:
                log.warning("cannot reach Redis to assign", error=str(exc))
                wake_at = now_ms() + 500
            except Exception:  # one bad record must not stop the captain: log it, look again soon
                log.exception("assignment round failed; retrying")
                wake_at = now_ms() + 1000
            log.debug("tick", ms=round((time.perf_counter() - started) * 1000, 2), assigned=self.assigned)

    async def why(self, task_id: str) -> str:
        """Why the task is, or is not, assigned: one or two plain sentences."""
        task = await self.board.get(task_id)
        if task.terminal:
            detail = task.result or task.reason
            return f"{task.id} is {task.state}" + (f": {detail}" if detail else "") + "; terminal, it never changes."
        if task.state in ("assigned", "running"):
            left = max(0, task.lease_until - now_ms()) / 1000
            spent = (f", spent ${task.spent_usd:.2f}" + (f" of ${task.budget_usd:.2f}" if task.budget_usd else "")
                     if task.spent_usd or task.budget_usd else "")
            return (f"{task.id} is {task.state} by {task.owner} (token {task.token}, attempt {task.attempts} of "
                    f"{task.max_attempts}, lease {left:.1f}s left{spent}).")
        if task.state == "blocked":
            reason = task.reason or "no reason given"
            return f"{task.id} is blocked: {reason}; `swarm task unblock {task.id}` reopens it."
        return await self._why_open(task)

    async def _why_open(self, task: Task) -> str:
        """`why` for an open task: what it waits for, if anything, else who could take it."""
        if task.deps_left > 0:
            deps = [await self.board.get(d) for d in task.blocked_by]
            waiting = ", ".join(f"{d.id} ({d.state})" for d in deps if d.state != "done")
            dead = [d.id for d in deps if d.state in ("failed", "cancelled")]
            tail = (f"; {', '.join(dead)} will not finish unless retried: "
                    + ", ".join(f"`swarm task retry {d}`" for d in dead) if dead else "")
            return f"{task.id} is open but waits on blocked-by {waiting}{tail}."
        if task.not_before > now_ms():
            left = (task.not_before - now_ms()) / 1000
            if task.attempts == 0:
                return f"{task.id} is open, delayed: ready in {left:.1f}s."
            return f"{task.id} is open, backing off {left:.1f}s after a failure: {task.reason}."
        spend = await self.board.spend()
        if "budget:swarm" in spend and spend.get("swarm", 0.0) >= spend["budget:swarm"]:
            return (f"{task.id} is open, but nothing is handed out: the swarm has spent its budget "
                    f"(${spend.get('swarm', 0.0):.2f} of ${spend['budget:swarm']:.2f}, SWARM_BUDGET_USD).")
        paused = await self.board.paused()
        if task.kind in paused:
            return f"{task.id} is open, but its kind {task.kind} is paused; `swarm resume {task.kind}` hands it out."
        return await self._why_ready(task)

    async def _why_ready(self, task: Task) -> str:
        slots = await self.slots()
        capable = [s for s in slots if s.info.card.can(task.caps)]
        caps = ",".join(task.caps)
        if not capable:
            live = ", ".join(f"{s.info.card.name} ({','.join(s.info.card.capabilities)})" for s in slots) or "none"
            return (f"{task.id} is ready but no live agent can do [{caps}]; live agents: {live}. "
                    f"Start one with `swarm agent run --name NAME --can {caps}`.")
        free = [s for s in capable if s.load < s.info.card.capacity]
        if not free:
            busy = ", ".join(f"{s.info.card.name} {s.load}/{s.info.card.capacity}" for s in capable)
            return f"{task.id} is ready; every capable agent is at capacity ({busy})."
        with doing("reading the leader"):
            leader = await self.redis.get(self.keys.leader)
        if leader is None:
            return f"{task.id} is ready and {free[0].info.card.name} could take it, but no captain leads: " \
                   "start one with `swarm captain run`."
        ahead = cast(int | None, await self.redis.zrank(self.keys.ready, task.id))
        return f"{task.id} is ready (position {(ahead or 0) + 1} in the queue); the captain assigns it next."
