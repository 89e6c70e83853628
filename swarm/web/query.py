"""What the web board reads: one page of tasks under filters, tasks by id, agents with their load.

Reads only (the protocol allows reading board keys directly; every change goes through `Board`).
A page of a state, or of the whole board, costs one range read and one `HGETALL` per task shown,
however large the board; the kind, owner and text filters read three fields of every task in the
chosen index (one `SORT_RO ... GET` where the server allows it, else pipelined `HMGET`s), and the
whole hash only of the tasks on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from swarm.board import Task
from swarm.connection import doing, text
from swarm.errors import BackendError
from swarm.keys import Keys
from swarm.registry import Registry
from swarm.settings import Settings

CHUNK = 2_000
"""Tasks per pipeline when a filter has to look at every task of an index."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the tasks table shows: every filter is optional; `text` matches id or title, any case."""

    state: str | None = None
    kind: str | None = None
    owner: str | None = None
    text: str | None = None

    @property
    def narrow(self) -> bool:
        """True when some filter needs each task's fields (not only the index it is in)."""
        return bool(self.kind or self.owner or self.text)

    def match(self, task_id: str, kind: str, owner: str, title: str) -> bool:
        """True when a task with these fields passes the kind, owner and text filters."""
        if (self.kind and kind != self.kind) or (self.owner and owner != self.owner):
            return False
        if self.text:
            needle = self.text.casefold()
            return needle in title.casefold() or needle in task_id.casefold()
        return True


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the tasks table, newest first, and how many tasks pass the filters in all."""

    tasks: list[Task]
    total: int


class Reader:
    """The board, agents and their tasks, as the web pages show them."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keys = Keys(settings.name)
        self.registry = Registry(redis, settings)
        self.sort = True
        """Filter with one server-side SORT_RO (False once the server refused it: scan instead)."""

    async def page(self, filters: Filters, offset: int, limit: int) -> Page:
        """Tasks passing `filters`, newest first, from `offset`, at most `limit`."""
        index = self.keys.state(filters.state) if filters.state else self.keys.tasks
        if not filters.narrow:
            with doing("reading a page of tasks"):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zcard(index)
                    pipe.zrevrange(index, offset, offset + limit - 1)
                    total, ids = await pipe.execute()
            return Page(await self.tasks([text(i) for i in ids]), int(total))
        matches = await self._sorted(index, filters) if self.sort else None
        if matches is None:
            matches = await self._scanned(index, filters)
        return Page(await self.tasks(matches[offset : offset + limit]), len(matches))

    async def _sorted(self, index: str, filters: Filters) -> list[str] | None:
        """The ids passing `filters`, newest first, read in one server-side `SORT_RO ... GET`; None
        when the server refuses it (a Redis Cluster before Valkey 8, or an ACL user without read
        access to every key), after which this reader scans instead."""
        pattern = self.keys.task("*")
        try:
            with doing("filtering tasks"):
                rows = cast(list[bytes | None], await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "SORT_RO", index, "BY", "nosort", "DESC", "GET", "#", "GET", f"{pattern}->kind",
                    "GET", f"{pattern}->owner", "GET", f"{pattern}->title"))
        except BackendError:
            self.sort = False
            return None
        found = iter(rows)
        return [text(task_id) for task_id, kind, owner, title in zip(found, found, found, found, strict=True)
                if task_id is not None and kind is not None
                and filters.match(text(task_id), text(kind), text(owner or b""), text(title or b""))]

    async def _scanned(self, index: str, filters: Filters) -> list[str]:
        """The same as `_sorted`, with the fields read in pipelined chunks (about 15 times slower)."""
        with doing("filtering tasks"):
            ids = [text(i) for i in cast(list[bytes], await self.redis.zrevrange(index, 0, -1))]
        matches: list[str] = []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            with doing("filtering tasks"):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for task_id in chunk:
                        pipe.hmget(self.keys.task(task_id), ["kind", "owner", "title"])
                    rows = await pipe.execute()
            for task_id, (kind, owner, title) in zip(chunk, rows, strict=True):
                if kind is not None and filters.match(task_id, text(kind), text(owner or b""), text(title or b"")):
                    matches.append(task_id)
        return matches

    async def tasks(self, ids: Sequence[str]) -> list[Task]:
        """The tasks with these ids, in that order; ids with no task are left out."""
        if not ids:
            return []
        with doing("reading tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(self.keys.task(task_id))
                rows = await pipe.execute()
        return [Task.from_redis({text(k): text(v) for k, v in row.items()}) for row in rows if row]

    async def agents(self) -> list[dict[str, Any]]:
        """Every listed agent: liveness, load against concurrency, and the tasks it owns now."""
        infos = await self.registry.all()
        with doing("reading agents' tasks"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for info in infos:
                    pipe.smembers(self.keys.owned(info.card.name))
                owned = await pipe.execute()
        return [
            {"name": info.card.name, "liveness": info.liveness, "last_seen": info.last_seen,
             "capabilities": list(info.card.capabilities), "roles": list(info.card.roles),
             "concurrency": info.card.concurrency, "load": len(tasks),
             "tasks": sorted((text(t) for t in tasks), key=_natural),
             "host": info.card.host, "version": info.card.version, "started_at": info.card.started_at}
            for info, tasks in zip(infos, owned, strict=True)
        ]


def _natural(task_id: str) -> tuple[int, str]:
    """t-2 before t-10."""
    return len(task_id), task_id
