"""The task board: tasks with fenced leases, every transition one Lua script.

States: `open -> assigned -> running -> done | failed`, plus `blocked` and `cancelled`; terminal
states (`done`, `failed`, `cancelled`) never change. Ownership changes bump the task's fencing
token; an owner must present its token, so a worker that lost its lease is refused, never silently
accepted. Each script appends its transition to the board-event stream in the same atomic step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import Redis

from swarm.connection import doing, text
from swarm.errors import (
    ConfigError,
    Forbidden,
    IllegalTransition,
    NotLeader,
    NotReady,
    StaleToken,
    SwarmError,
    TaskNotFound,
)
from swarm.keys import Keys
from swarm.lua import Scripts
from swarm.protocol import AGENT_PATTERN, KIND_PATTERN, TaskEvent, decode, new_id
from swarm.recorder import Recorder
from swarm.settings import Settings

State = Literal["open", "assigned", "running", "done", "failed", "blocked", "cancelled"]
STATES: tuple[State, ...] = ("open", "assigned", "running", "blocked", "done", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
_AGENT = re.compile(AGENT_PATTERN)

_ERRORS: dict[str, type[SwarmError]] = {
    "not_found": TaskNotFound,
    "stale_token": StaleToken,
    "illegal": IllegalTransition,
    "not_ready": NotReady,
    "not_leader": NotLeader,
    "invalid": ConfigError,
    "forbidden": Forbidden,
}


def refused(reply: dict[str, Any]) -> SwarmError | None:
    """The error a script's reply (or one item of a batched reply) carries, None when it has none."""
    if "error" not in reply:
        return None
    return _ERRORS.get(reply["error"], SwarmError)(reply["message"])


class TaskSpec(BaseModel):
    """What it takes to create a task. `caps` defaults to the task's kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(pattern=KIND_PATTERN)
    title: str = Field(min_length=1, max_length=300)
    body: str = Field("", max_length=32_768)
    priority: int = Field(5, ge=0, le=9, description="0 (lowest) to 9 (most urgent).")
    key: str = Field("", max_length=512, description="Dedup key: a second create with it returns the first task.")
    evidence: tuple[str, ...] = Field((), description="Ids of the messages that caused the task.")
    blocked_by: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    files: tuple[str, ...] = Field((), description="Files the task touches (the captain's affinity hint).")
    max_attempts: int | None = Field(None, ge=1, le=100)
    not_before: int = Field(0, ge=0, description="Not ready before this time (ms since the epoch); 0: at once.")
    budget_usd: float = Field(0.0, ge=0, description="The most it may spend (reported usage); 0: no budget.")

    @field_validator("caps", "evidence", "blocked_by")
    @classmethod
    def _no_commas(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not value or "," in value:
                raise ValueError(f"{value!r} must be non-empty and contain no comma")
        return values


class Task(BaseModel):
    """A task as the board holds it."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    title: str
    body: str = ""
    priority: int = 5
    key: str = ""
    evidence: tuple[str, ...] = ()
    blocked_by: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    state: State
    owner: str | None = None
    token: int = 0
    attempts: int = 0
    max_attempts: int = 3
    lease_until: int = 0
    not_before: int = 0
    deps_left: int = 0
    created: int = 0
    updated: int = 0
    result: str = ""
    reason: str = ""
    budget_usd: float = 0.0
    spent_usd: float = 0.0
    tokens: int = 0

    @property
    def terminal(self) -> bool:
        """True for done, failed and cancelled: states that never change again."""
        return self.state in TERMINAL

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Task:
        """Build from the task hash (all values strings; lists comma- or newline-joined)."""
        data: dict[str, Any] = dict(fields)
        data["blocked_by"] = _split(fields.get("deps", ""), ",")
        data.pop("deps", None)
        for name in ("evidence", "caps"):
            data[name] = _split(fields.get(name, ""), ",")
        data["files"] = _split(fields.get("files", ""), "\n")
        data["owner"] = fields.get("owner") or None
        return cls.model_validate(data)

    def summary(self) -> dict[str, Any]:
        """The JSON form the CLI prints (`--json`)."""
        return self.model_dump(mode="json")


def _split(value: str, sep: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(sep) if v) if value else ()


@dataclass(frozen=True, slots=True)
class Ready:
    """A ready task as the captain's view returns it: only what assigning needs. A plain record, not
    a `Task`: a round may look at hundreds, and the board wrote them."""

    id: str
    caps: tuple[str, ...]
    files: tuple[str, ...]

    @classmethod
    def from_view(cls, fields: dict[str, str]) -> Ready:
        """From one task of a `view` reply (the task hash's fields, strings)."""
        return cls(fields["id"], _split(fields["caps"], ","), _split(fields["files"], "\n"))


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One registered agent as `Board.view` sees it: its card (JSON), last heartbeat, load, and
    the files of the viewed tasks it has finished work on before."""

    name: str
    card: str
    seen: int
    load: int
    affinity: frozenset[str]


@dataclass(frozen=True, slots=True)
class Settled:
    """One report of `Board.settle`: done at `updated` (ms), or refused with `error`."""

    id: str
    updated: int
    error: SwarmError | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim took. `tip` is set when it took fewer tasks than asked for: the board-event
    stream's newest id at that moment (wait for events after it to learn of new work)."""

    tasks: list[Task]
    tip: str | None = None
    budget: str | None = None
    """Set when a budget stopped the claim: which one, and what was spent."""

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Claimed:
        """From a claim's or settle's reply."""
        return cls([Task.from_redis(t) for t in reply.get("tasks") or []], reply.get("tip"), reply.get("budget"))


@dataclass(frozen=True, slots=True)
class BoardView:
    """What the captain needs for one round of assignments."""

    tasks: list[Ready]
    agents: list[AgentRow]
    moved: list[str]
    wake_at: int | None
    more: bool = False
    """Ready tasks lie beyond `tasks` (read the next page when these fit no free agent)."""
    scanned: int = 0
    """Entries of the ready queue read past for `tasks` (those of paused kinds are not returned)."""


class Board:
    """Every task operation of one swarm; each mutation is one atomic script call."""

    def __init__(self, redis: Redis, settings: Settings, *, speak: bool = True, metrics: Recorder | None = None,
                 ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.scripts = Scripts(redis)
        self.speak = speak
        """Owner transitions also write the owner's status message on the bus ("working on t-3: ...",
        "done t-3: ...", "failed t-3: ..."), in the same script call."""
        self.metrics = metrics or Recorder()
        """Counts those status messages as published (by the owner's process)."""

    def _said(self, count: int) -> None:
        if count and self.speak:
            self.metrics.on_publish_many(["status"] * count)

    @property
    def lease_ms(self) -> int:
        """The lease length every hand-out and heartbeat grants, in milliseconds."""
        return int(self.settings.lease_s * 1000)

    async def _call(self, script: str, *args: str | int | float) -> dict[str, Any]:
        with doing(f"running board script {script}"):
            raw = await self.scripts[script](
                keys=[self.keys.events],
                args=[self.keys.prefix, new_id(), self.settings.stream_maxlen, *args],
            )
        reply: dict[str, Any] = json.loads(raw)
        error = refused(reply)
        if error is not None:
            raise error
        return reply

    async def _task(self, script: str, *args: str | int | float) -> Task:
        return Task.from_redis((await self._call(script, *args))["task"])

    # --- creating and reading ------------------------------------------------------------------
    def _payload(self, spec: TaskSpec) -> dict[str, Any]:
        # A field at the script's default is left out (create.lua fills it in): a third of the JSON
        # to encode and decode, and of the bytes to send, for the common spec.
        out: dict[str, Any] = {"kind": spec.kind, "title": spec.title,
                               "max_attempts": spec.max_attempts or self.settings.max_attempts}
        if spec.body:
            out["body"] = spec.body
        if spec.priority != 5:
            out["priority"] = spec.priority
        if spec.key:
            out["key"] = spec.key
        if spec.evidence:
            out["evidence"] = ",".join(spec.evidence)
        if spec.blocked_by:
            out["deps"] = list(spec.blocked_by)
        if spec.caps:
            out["caps"] = ",".join(spec.caps)
        if spec.files:
            out["files"] = "\n".join(spec.files)
        if spec.not_before:
            out["not_before"] = spec.not_before
        if spec.budget_usd:
            out["budget_usd"] = spec.budget_usd
        return out

    async def create(self, spec: TaskSpec) -> tuple[Task, bool]:
        """Create a task; with a dedup key already used, return that task and False."""
        reply = await self._call("create", json.dumps(self._payload(spec)))
        return Task.from_redis(reply["task"]), bool(reply["created"])

    async def create_many(self, specs: Sequence[TaskSpec], *, chunk: int = 500) -> list[tuple[str, bool]]:
        """Create many tasks, one script call per `chunk` (same checks and dedup keys as `create`):
        `(task id, created)` per spec, in order. A chunk with a bad spec creates nothing of it."""
        out: list[tuple[str, bool]] = []
        for start in range(0, len(specs), chunk):
            payload = json.dumps([self._payload(spec) for spec in specs[start:start + chunk]])
            reply = await self._call("create_many", payload)
            out += [(t["id"], bool(t["created"])) for t in reply.get("tasks") or []]
        return out

    async def get(self, task_id: str) -> Task:
        """One task, or TaskNotFound."""
        with doing("reading a task"):
            fields = await self.redis.hgetall(self.keys.task(task_id))
        if not fields:
            raise TaskNotFound(f"no task {task_id} on this board; `swarm task list` shows the ids")
        return Task.from_redis({text(k): text(v) for k, v in fields.items()})

    async def tasks(
        self, state: str | None = None, kind: str | None = None, limit: int = 1000, *, owner: str | None = None,
        search: str | None = None, since: int = 0, offset: int = 0,
    ) -> list[Task]:
        """Tasks, oldest first, optionally of one state, kind and owner, with `search` in the title or
        body (case-insensitive), created at or after `since` (ms); `offset` of them skipped (paging)."""
        index = self.keys.state(state) if state else self.keys.tasks
        filtered = kind is not None or owner is not None or search is not None
        with doing("listing tasks"):
            if filtered:
                ids = cast(list[bytes], await self.redis.zrangebyscore(index, since or "-inf", "+inf"))
            else:
                ids = cast(list[bytes], await self.redis.zrangebyscore(index, since or "-inf", "+inf", start=offset,
                                                                        num=limit))
        needle = search.lower() if search else None
        tasks = [t for t in await self._many(ids)
                 if (kind is None or t.kind == kind) and (owner is None or t.owner == owner)
                 and (needle is None or needle in t.title.lower() or needle in t.body.lower())]
        return tasks[offset:offset + limit] if filtered else tasks

    async def _many(self, ids: Sequence[bytes | str]) -> list[Task]:
        with doing("reading tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(self.keys.task(text(task_id)))
                rows = await pipe.execute()
        return [Task.from_redis({k.decode(): v.decode() for k, v in row.items()}) for row in rows if row]

    async def received(self, agent: str, refs: Sequence[tuple[str, int]]) -> list[Task]:
        """The tasks of an assignment that came already `running` (`refs`: task id and token), in one
        round trip: those `agent` still holds with that token (any other moved on since: not ours)."""
        tasks = await self._many([task_id for task_id, _ in refs])
        tokens = dict(refs)
        return [t for t in tasks if t.owner == agent and t.state == "running" and tokens.get(t.id) == t.token]

    async def counts(self) -> dict[str, int]:
        """Number of tasks in each state."""
        with doing("counting tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for state in STATES:
                    pipe.zcard(self.keys.state(state))
                values = await pipe.execute()
        return dict(zip(STATES, (int(v) for v in values), strict=True))

    async def ready(self, limit: int = 1000) -> list[Task]:
        """Ready tasks in claim order: open, dependencies done, not backing off."""
        with doing("reading the ready queue"):
            ids = cast(list[bytes], await self.redis.zrange(self.keys.ready, 0, limit - 1))
        return await self._many(ids)

    async def history(self, task_id: str) -> list[TaskEvent]:
        """Every transition of the task, oldest first."""
        await self.get(task_id)
        with doing("reading task history"):
            rows = await self.redis.lrange(self.keys.history(task_id), 0, -1)
        events: list[TaskEvent] = []
        for row in rows:
            msg = decode(row)
            if isinstance(msg, TaskEvent):
                events.append(msg)
        return events

    async def holds(self, task_id: str, agent: str, token: int) -> bool:
        """True while `agent` owns the task with `token` and its lease has not run out (server clock)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.task(task_id), ["owner", "token", "state", "lease_until"])
            pipe.time()
            (owner, current, state, until), (seconds, micros) = await pipe.execute()
        now = int(seconds) * 1000 + int(micros) // 1000
        return (text(owner or b""), int(current or 0), text(state or b"")) in {
            (agent, token, "assigned"), (agent, token, "running")} and int(until or 0) > now

    async def owned(self, agent: str) -> set[str]:
        """Ids of the tasks `agent` owns now."""
        with doing("reading an agent's tasks"):
            return {text(i) for i in await self.redis.smembers(self.keys.owned(agent))}

    async def affinity(self, agent: str) -> set[str]:
        """Files `agent` has finished tasks on."""
        with doing("reading affinity"):
            return {text(i) for i in await self.redis.smembers(self.keys.affinity(agent))}

    # --- the captain's and humans' transitions -------------------------------------------------
    async def assign(
        self, task_id: str, agent: str, *, instance: str = "", epoch: int | None = None, force: bool = False
    ) -> Task:
        """Give an open, ready task to `agent` (with `force`, take it from its current owner) and
        write the assignment to the agent's inbox in the same step. `epoch` fences a deposed captain."""
        _check_agent(agent)
        return await self._task(
            "assign", task_id, agent, instance, self.lease_ms, "" if epoch is None else epoch,
            "1" if force else "0", new_id(),
        )

    async def assign_many(
        self, plan: Sequence[tuple[str, str, str]], *, epoch: int | None = None
    ) -> list[tuple[str, SwarmError | None]]:
        """`assign` for every `(task id, agent, agent instance)` in one script call, each task handed out
        already `running` and one assignment message per agent: per task, None when it was assigned,
        or the error that refused it (the others still go through)."""
        args: list[str | int] = []
        for task_id, agent, instance in plan:
            _check_agent(agent)
            args += (task_id, agent, instance)
        # A message's size stays well under the readers' limit (the same setting, SWARM_MAX_MESSAGE_BYTES).
        budget = self.settings.max_message_bytes * 3 // 4
        reply = await self._call("assign_many", "" if epoch is None else epoch, self.lease_ms, budget, *args)
        return [(r["id"], refused(r)) for r in reply.get("results") or []]

    async def cancel(self, task_id: str, reason: str = "cancelled") -> Task:
        """Cancel a non-terminal task; its owner's token stops working."""
        return await self._task("manage", "cancel", task_id, reason)

    async def unblock(self, task_id: str, note: str = "") -> Task:
        """Put a blocked task back to open."""
        return await self._task("manage", "unblock", task_id, note)

    async def retry(self, task_id: str, note: str = "") -> Task:
        """A failed or cancelled task back to open: attempts from 0, a new token, its history kept.
        Its dependents become ready once it is done."""
        return await self._task("manage", "retry", task_id, note)

    async def edit(self, task_id: str, *, priority: int | None = None, title: str | None = None,
                   body: str | None = None, caps: Sequence[str] | None = None) -> Task:
        """Change a task that is not running yet (open, blocked or assigned)."""
        fields: dict[str, Any] = {"priority": priority, "title": title, "body": body,
                                  "caps": None if caps is None else ",".join(caps)}
        return await self._task("manage", "edit", task_id, json.dumps({k: v for k, v in fields.items()
                                                                        if v is not None}))

    async def purge(self, older_than_ms: int, states: Sequence[str] = ("done", "failed", "cancelled"),
                    *, batch: int = 1000) -> int:
        """Remove finished tasks (and their history) whose last change is older than `older_than_ms`;
        the number removed."""
        cutoff = await self.now_ms() - older_than_ms
        total = 0
        while True:
            reply = await self._call("purge", cutoff, ",".join(states), batch)
            total += int(reply["purged"])
            if not reply.get("more"):
                return total

    async def now_ms(self) -> int:
        """The server's clock, in ms (what every script stamps with)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def usage(self, task_id: str, token: int, *, agent: str, tokens: int = 0, usd: float = 0.0,
                    ) -> tuple[Task, bool]:
        """Report what the owner's task used; the task, and True when that put it over its own
        budget (it has failed, and its handler must stop now)."""
        _check_agent(agent)
        reply = await self._call("usage", agent, task_id, str(token), tokens, usd)
        return Task.from_redis(reply["task"]), bool(reply.get("over_budget"))

    async def set_budget(self, usd: float | None, agent: str | None = None) -> None:
        """The swarm's budget (or `agent`'s) in USD; None removes it. Nothing is handed out under a
        budget that is spent."""
        field = "swarm" if agent is None else f"agent:{agent}"
        if usd is None:
            await self.redis.hdel(self.keys.budget, field)
        else:
            await self.redis.hset(self.keys.budget, field, format(float(usd), ".10g"))

    async def spend(self) -> dict[str, float]:
        """What was spent and what may be: `{"swarm": usd, "agent:<name>": usd, "tokens:swarm": n, ...,
        "budget:swarm": usd, "budget:agent:<name>": usd}`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.spend)
            pipe.hgetall(self.keys.budget)
            spent, limits = await pipe.execute()
        out = {text(k): float(v) for k, v in spent.items()}
        out.update({f"budget:{text(k)}": float(v) for k, v in limits.items()})
        return out

    async def pause(self, kind: str) -> None:
        """No claim or assignment hands out tasks of `kind` until `resume`."""
        await self.redis.sadd(self.keys.paused, kind)

    async def resume(self, kind: str) -> None:
        """Hand out tasks of `kind` again."""
        await self.redis.srem(self.keys.paused, kind)

    async def paused(self) -> list[str]:
        """The kinds paused now."""
        return sorted(text(k) for k in await self.redis.smembers(self.keys.paused))

    async def reclaim_expired(self, limit: int = 500) -> tuple[list[str], int | None]:
        """Return expired leases to open (or failed past max_attempts); the ids moved, and the
        time (ms) of the next lease expiry or backoff end, when the captain should look again."""
        reply = await self._call("reclaim", limit)
        moved = reply.get("moved") or []
        wake = [t for t in (reply.get("next_expiry"), reply.get("next_ready")) if t is not None]
        return list(moved), int(min(wake)) if wake else None

    async def view(self, offset: int = 0, limit: int = 64, live_ms: int = 6_000) -> BoardView:
        """The captain's look at the board in one round trip (see swarm/lua/view.lua): expired
        leases reclaimed first, every agent, and up to `limit` ready tasks from `offset` that some
        agent heard from within `live_ms` with a free slot can do (no more than the free slots), each
        with only the fields assigning needs."""
        reply = await self._call("view", offset, limit, 500, live_ms)
        wake = [t for t in (reply.get("next_expiry"), reply.get("next_ready")) if t is not None]
        return BoardView(
            tasks=[Ready.from_view(t) for t in reply.get("tasks") or []],
            agents=[AgentRow(name=a["name"], card=a["card"], seen=int(a["seen"]), load=int(a["load"]),
                             affinity=frozenset(a.get("affinity") or ())) for a in reply.get("agents") or []],
            moved=list(reply.get("moved") or []),
            wake_at=int(min(wake)) if wake else None,
            more=bool(reply.get("more")),
            scanned=int(reply.get("scanned") or 0),
        )

    # --- agents coming and going ----------------------------------------------------------------
    async def register(self, agent: str, instance: str, card: str) -> list[str]:
        """Write an agent's card as `instance` and mark it seen; the tasks `agent` still owns (an
        earlier instance's) go back to open in the same step, each counted as an attempt. The ids."""
        _check_agent(agent)
        return list((await self._call("register", agent, instance, card)).get("moved") or [])

    async def reap(self, agent: str, instance: str) -> list[str]:
        """`instance` of `agent` is dead (its connections are gone): mark it gone and put its tasks
        back, each counted as an attempt, unless a newer instance registered meanwhile. The ids."""
        _check_agent(agent)
        return list((await self._call("reap", agent, instance)).get("moved") or [])

    # --- the owner's transitions ---------------------------------------------------------------
    async def claim_next(self, agent: str, caps: Sequence[str]) -> Task | None:
        """Take the best ready task `agent` is capable of (`*` = anything); None when none is."""
        tasks = (await self.claim(agent, caps, 1)).tasks
        return tasks[0] if tasks else None

    async def claim(self, agent: str, caps: Sequence[str], count: int, *, wait_s: float = 0.0) -> Claimed:
        """Take up to `count` of the best ready tasks `agent` is capable of, in one atomic step; tasks
        the board handed to `agent` and it has not popped yet come first. With `wait_s`, when it took
        fewer than `count`, `agent` waits idle for the rest that long: a task made ready meanwhile is
        claimed for it and pushed onto its handoff list, for `handoff` to pop (the idle hand-off)."""
        _check_agent(agent)
        claimed = Claimed.from_reply(await self._call(
            "claim", agent, ",".join(caps) or "*", self.lease_ms, count, self._speak, int(wait_s * 1000)))
        self._said(len(claimed.tasks))
        return claimed

    async def handoff(self, agent: str, count: int, *, wait_s: float | None = None) -> list[Task]:
        """Pop up to `count` of the tasks the board claimed for `agent` while it waited idle (see
        `claim`), oldest first; with `wait_s`, block up to that long for the first (BLMPOP). What
        comes back is the caller's, running and leased: run it, or give it back with `release`."""
        key = self.keys.handoff(agent)
        with doing("waiting for a hand-off" if wait_s is not None else "taking the tasks handed over"):
            if wait_s is None:
                raw = await self.redis.lpop(key, count)
            else:
                popped = await self.redis.blmpop(wait_s, 1, key, direction="LEFT", count=count)
                raw = popped[1] if popped else None
        return [Task.from_redis(json.loads(entry)) for entry in cast(list[bytes], raw or [])]

    async def start_many(self, agent: str, started: Sequence[tuple[str, int]]) -> list[tuple[str, Task | SwarmError]]:
        """`start` for every `(task id, token)` of `agent` in one script call: per task, the running
        task or the error that refused it (the others still go through)."""
        _check_agent(agent)
        flat: list[str | int] = []
        for task_id, token in started:
            flat += (task_id, str(token))
        reply = await self._call("start_many", agent, self.lease_ms, self._speak, *flat)
        results = [(r["id"], refused(r) or Task.from_redis(r["task"])) for r in reply.get("results") or []]
        self._said(sum(isinstance(result, Task) for _, result in results))
        return results

    async def renew(self, agent: str, held: Sequence[tuple[str, int]]) -> list[tuple[str, SwarmError | None]]:
        """`heartbeat` for every `(task id, token)` `agent` holds, in one script call: per task, None
        when its lease was extended, or the error that refused it (the others still go through)."""
        _check_agent(agent)
        flat: list[str | int] = []
        for task_id, token in held:
            flat += (task_id, str(token))
        reply = await self._call("renew", agent, self.lease_ms, *flat)
        return [(r["id"], refused(r)) for r in reply.get("results") or []]

    async def settle(
        self, agent: str, done: Sequence[tuple[str, int, str]], *, claim: int = 0, caps: Sequence[str] = ()
    ) -> tuple[list[Settled], Claimed]:
        """Report many `(task id, token, result)` as done and claim up to `claim` ready tasks, in one
        script call (what a busy agent does with the slots its finished tasks free). A refused
        report (stale token, not running) comes back with its error; the others still count."""
        _check_agent(agent)
        flat: list[str | int] = []
        for task_id, token, result in done:
            flat += (task_id, str(token), result)
        reply = await self._call("settle", agent, ",".join(caps) or "*", self.lease_ms, claim, self._speak, *flat)
        settled = [Settled(d["id"], int(d.get("updated") or 0), refused(d)) for d in reply.get("done") or []]
        claimed = Claimed.from_reply(reply)
        self._said(sum(r.error is None for r in settled) + len(claimed.tasks))
        return settled, claimed

    @property
    def _speak(self) -> str:
        return "1" if self.speak else "0"

    async def _own(self, action: str, task_id: str, token: int, agent: str, text: str = "", retry: bool = True,
                   ) -> Task:
        _check_agent(agent)
        reply = await self._call(
            "own", action, task_id, str(token), self.lease_ms, text,
            int(self.settings.retry_backoff_s * 1000), "1" if retry else "0", self._speak, agent,
        )
        return Task.from_redis(reply["task"])

    # Each takes the owner's name and its token: a third party holding a valid token is refused.
    async def start(self, task_id: str, token: int, *, agent: str) -> Task:
        """assigned -> running."""
        return await self._own("start", task_id, token, agent)

    async def heartbeat(self, task_id: str, token: int, *, agent: str) -> Task:
        """Extend the lease by `lease_s`."""
        return await self._own("heartbeat", task_id, token, agent)

    async def complete(self, task_id: str, token: int, result: str = "", *, agent: str) -> Task:
        """-> done with `result` (`settle` reports many and claims the next in the same call)."""
        return await self._own("done", task_id, token, agent, result)

    async def fail(self, task_id: str, token: int, reason: str, *, agent: str, retry: bool = True) -> Task:
        """-> open after a backoff while attempts remain (and `retry`), else failed with `reason`."""
        task = await self._own("fail", task_id, token, agent, reason, retry)
        self._said(1)
        return task

    async def release(self, task_id: str, token: int, note: str = "released", *, agent: str) -> Task:
        """Give the task back (graceful shutdown): open again now, the attempt not counted."""
        return await self._own("release", task_id, token, agent, note)

    async def block(self, task_id: str, token: int, reason: str, *, agent: str) -> Task:
        """-> blocked with a reason; `unblock` reopens it."""
        return await self._own("block", task_id, token, agent, reason)


def _check_agent(agent: str) -> None:
    """Agent names go into events and stream names: refuse one the protocol would not decode."""
    if not _AGENT.match(agent):
        raise ConfigError(f"agent name {agent!r} must be 1-64 letters, digits, '_', '.' or '-'")


def check_state(value: str | None) -> str | None:
    """Validate a `--state` option value."""
    if value is not None and value not in STATES:
        raise IllegalTransition(f"unknown state {value!r}; use one of: {', '.join(STATES)}")
    return value
