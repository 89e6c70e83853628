"""Board events to browsers: one reader of the board-event stream per web process, fanned out.

The hub reads `events` with a blocking `XREAD` from the newest entry on, and for each batch of
transitions reads the tasks they touched and the counts per state once; every open page gets that
batch as one server-sent event. A page never polls the board: it loads once, then follows.
A subscriber too slow to keep up is dropped (its page reconnects and reloads what it shows).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis

from swarm.board import Board
from swarm.bus import Bus
from swarm.connection import Backoff, doing, text
from swarm.errors import DecodeError, SwarmError
from swarm.keys import FIELD_BYTES
from swarm.protocol import TaskEvent, decode, now_ms
from swarm.settings import Settings
from swarm.web.query import Reader

log = structlog.get_logger("swarm.web")

BLOCK_MS = 5_000
BATCH = 500
BUFFER = 64
"""Batches a subscriber may fall behind before it is dropped."""
KEEPALIVE_S = 15.0


@dataclass(frozen=True, slots=True)
class Batch:
    """Transitions read in one go: the events, the tasks they touched as they are now, the counts."""

    last_id: str
    events: list[dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    counts: dict[str, int]
    now: int

    def sse(self) -> str:
        """The batch as one server-sent event (`event: board`, resumable by its `id`)."""
        data = {"events": self.events, "tasks": self.tasks, "counts": self.counts, "now": self.now}
        return f"id: {self.last_id}\nevent: board\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Hub:
    """Follows the board-event stream while its `async with` block runs."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.error: str | None = None
        """Why the last read failed (None while reads succeed): what /healthz reports."""
        self.running = False
        self._subscribers: set[MemoryObjectSendStream[Batch]] = set()
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> Hub:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        await self._group.start(self._follow)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        for send in list(self._subscribers):
            send.close()
        return await self._group.__aexit__(kind, exc, tb)

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[Batch]]:
        """Batches from now on, until the block ends (or the subscriber falls behind and is dropped)."""
        send, receive = anyio.create_memory_object_stream[Batch](BUFFER)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    async def _follow(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        bus, board = Bus(self.redis, self.settings), Board(self.redis, self.settings)
        reader = Reader(self.redis, self.settings)
        events = bus.keys.events
        backoff = Backoff()
        last: str | None = None
        self.running = True
        task_status.started()
        try:
            while True:
                try:
                    if last is None:
                        last = await bus.last_id(events)
                    with doing("following the board-event stream"):
                        reply = cast(list[Any], await self.redis.xread({events: last}, count=BATCH, block=BLOCK_MS))
                    self.error = None
                    backoff.reset()
                    if not reply:
                        continue
                    entries = reply[0][1]
                    last = text(entries[-1][0])
                    if self._subscribers:
                        await self._publish(last, entries, reader, board)
                except SwarmError as exc:
                    self.error = str(exc)
                    log.warning("cannot follow the board-event stream; retrying", error=self.error)
                    await backoff.wait()
        finally:
            self.running = False

    async def _publish(self, last: str, entries: list[Any], reader: Reader, board: Board) -> None:
        events: list[dict[str, Any]] = []
        for entry_id, fields in entries:
            try:
                msg = decode((fields or {}).get(FIELD_BYTES, b""), self.settings.max_message_bytes)
            except DecodeError:
                continue  # only the board scripts write here; nothing else is worth showing
            if isinstance(msg, TaskEvent):
                b = msg.body
                events.append({"entry": text(entry_id), "ts": msg.ts, "task_id": b.task_id, "event": b.event,
                               "state": b.state, "owner": b.owner, "token": b.token, "detail": b.detail})
        ids = list(dict.fromkeys(e["task_id"] for e in events))
        tasks = {t.id: t.summary() for t in await reader.tasks(ids)}
        batch = Batch(last, events, tasks, await board.counts(), now_ms())
        for send in list(self._subscribers):
            try:
                send.send_nowait(batch)
            except anyio.WouldBlock:
                log.info("a page fell behind the board events; dropping it (it reconnects)")
                send.close()
                self._subscribers.discard(send)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)


async def stream(hub: Hub) -> AsyncIterator[str]:
    """Server-sent events for one page: `hello` once subscribed, then one `board` per batch, and
    a comment every `KEEPALIVE_S` so proxies keep the connection and a closed one is noticed."""
    with hub.subscribe() as batches:
        yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'now': now_ms()})}\n\n"
        while True:
            with anyio.move_on_after(KEEPALIVE_S) as waited:
                try:
                    batch = await batches.receive()
                except anyio.EndOfStream:
                    return
            if waited.cancelled_caught:
                yield ": keepalive\n\n"
            else:
                yield batch.sse()
