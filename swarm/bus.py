"""The bus: publish messages to streams, consume them through consumer groups, dead-letter the bad.

Every entry a consumer group sees ends in exactly one of three places: acked (handled), pending
(in flight, or left by a dead consumer until someone reclaims it), or the dead-letter stream (it
did not decode, or it was delivered `max_deliveries` times without an ack).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from redis.asyncio import Redis

from swarm.connection import Backoff, doing, retrying, text
from swarm.errors import BackendError, DecodeError
from swarm.keys import FIELD, FIELD_BYTES, Keys
from swarm.lua import Scripts
from swarm.protocol import Message, decode, encode, now_ms
from swarm.recorder import Recorder
from swarm.settings import Settings

log = structlog.get_logger("swarm.bus")

PUBLISH_CHUNK = 1_000
"""Messages per EVALSHA in `publish_many`: big enough to amortise, small enough not to stall Redis."""

Entry = tuple[bytes, dict[bytes, bytes] | None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded message as a consumer received it."""

    stream: str
    entry_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream: where it came from, why, and the raw bytes."""

    id: str
    stream: str
    entry: str
    group: str
    consumer: str
    reason: str
    at: int
    raw: bytes


Handler = Callable[[Delivery], Awaitable[None]]


class Bus:
    """Publishing and dead letters for one swarm; `consumer()` builds readers."""

    def __init__(self, redis: Redis, settings: Settings, metrics: Recorder | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.scripts = Scripts(redis)
        self.metrics = metrics or Recorder()

    async def publish(self, msg: Message) -> str:
        """Append `msg` to its recipient's stream; returns the stream entry id."""
        payload = encode(msg, self.settings.max_message_bytes)
        with doing("publishing a message"):
            entry = await self.redis.xadd(
                self.keys.stream_for(msg.to), {FIELD: payload},
                maxlen=self.settings.stream_maxlen, approximate=True,
            )
        self.metrics.on_publish(msg.kind)
        return text(entry)

    async def publish_many(self, msgs: Iterable[Message]) -> list[str]:
        """Append many messages in few round trips (one script call per chunk); ids in order."""
        ids: list[str] = []
        batch: list[Message] = []
        for msg in msgs:
            batch.append(msg)
            if len(batch) == PUBLISH_CHUNK:
                ids += await self._publish_chunk(batch)
                batch = []
        if batch:
            ids += await self._publish_chunk(batch)
        return ids

    async def _publish_chunk(self, msgs: Sequence[Message]) -> list[str]:
        limit = self.settings.max_message_bytes
        streams: dict[str, int] = {}
        args: list[bytes | int | str] = [self.settings.stream_maxlen]
        for msg in msgs:
            stream = self.keys.stream_for(msg.to)
            index = streams.setdefault(stream, len(streams) + 1)
            args += (index, encode(msg, limit))
        with doing("publishing a batch"):
            ids: list[bytes] = await self.scripts["publish"](keys=list(streams), args=args)
        self.metrics.on_publish_many(m.kind for m in msgs)
        return [i.decode() for i in ids]

    async def last_id(self, stream: str) -> str:
        """The id of the newest entry in `stream` ("0-0" when empty): where a plain XREAD that must
        not miss anything starts (`$` would skip entries that arrive between two reads)."""
        with doing("reading a stream's last id"):
            rows = cast(list[Entry], await self.redis.xrevrange(stream, count=1))
        return text(rows[0][0]) if rows else "0-0"

    async def dead_letter(self, stream: str, group: str, entry_id: str, reason: str, consumer: str,
                          *, kind: str = "unknown") -> str:
        """Move one pending entry to the dead-letter stream with `reason`, acking it in the same step
        (`kind`, when known, is only for the metrics)."""
        with doing("dead-lettering an entry"):
            dl: bytes = await self.scripts["dead_letter"](
                keys=[stream, self.keys.dlq],
                args=[group, entry_id, reason, consumer, self.settings.stream_maxlen, now_ms()],
            )
        log.warning("dead-lettered", stream=self.keys.short(stream), entry=entry_id, reason=reason)
        self.metrics.on_dead_letter(kind)
        return dl.decode()

    async def kind_of(self, stream: str, entry_id: str) -> str:
        """The kind of the message in one stream entry (`undecodable`, or `unknown` once trimmed)."""
        with doing("reading a stream entry"):
            rows = cast(list[Entry], await self.redis.xrange(stream, entry_id, entry_id, count=1))
        raw = (rows[0][1] or {}).get(FIELD_BYTES) if rows else None
        if raw is None:
            return "unknown"
        try:
            return decode(raw, self.settings.max_message_bytes).kind
        except DecodeError:
            return "undecodable"

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The newest `count` dead letters, newest first."""
        with doing("reading the dead-letter stream"):
            rows = cast(list[Entry], await self.redis.xrevrange(self.keys.dlq, count=count))
        return [_dead_letter(entry_id, fields or {}) for entry_id, fields in rows]

    def consumer(self, group: str, name: str, streams: Sequence[str], *, start: str = "$") -> Consumer:
        """A reader of `streams` as consumer `name` in `group`; `start` is where a new group begins."""
        return Consumer(self, group, name, streams, start=start)


class Consumer:
    """Reads through a consumer group: resumes its own pending work, reclaims dead peers' entries,
    dead-letters what does not decode or keeps failing, and survives connection loss."""

    def __init__(self, bus: Bus, group: str, name: str, streams: Sequence[str], *, start: str = "$") -> None:
        self.bus = bus
        self.group = group
        self.name = name
        self.streams = list(streams)
        self.start = start
        self._redis = bus.redis
        self._settings = bus.settings
        self._cursors = dict.fromkeys(self.streams, "0-0")
        self.attached = False
        """True once every group exists (what an agent's or the discovery engine's /readyz reports)."""

    async def setup(self) -> None:
        """Create the groups (and streams) that do not exist yet; idempotent."""
        for stream in self.streams:
            try:
                await self._redis.xgroup_create(stream, self.group, id=self.start, mkstream=True)
            except BackendError as exc:
                if exc.code != "BUSYGROUP":  # BUSYGROUP: it exists already, which is what we want
                    raise
        self.attached = True

    async def read(self, block_ms: int | None = None) -> list[Delivery]:
        """New entries (blocking up to `block_ms`), decoded; bad ones are dead-lettered, not returned."""
        block = self._settings.block_ms if block_ms is None else block_ms
        try:
            reply = await self._redis.xreadgroup(
                self.group, self.name, dict.fromkeys(self.streams, ">"),
                count=self._settings.read_count, block=block,
            )
        except BackendError as exc:
            if exc.code != "NOGROUP":
                raise
            await self.setup()  # the stream was deleted under us: recreate and read again
            return []
        out: list[Delivery] = []
        for stream_b, entries in cast(list[tuple[bytes, list[Entry]]], reply or []):
            out += await self._decode_all(text(stream_b), entries)
        return out

    async def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge handled deliveries (one XACK per stream, pipelined)."""
        by_stream: dict[str, list[str]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d.entry_id)
        await self._ack_ids(by_stream)

    async def _ack_ids(self, by_stream: dict[str, list[str]]) -> None:
        if not by_stream:
            return
        with doing("acknowledging"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xack(stream, self.group, *ids)
                await pipe.execute()

    async def resume(self) -> list[Delivery]:
        """Take back this consumer's own pending entries after a restart (counting the redelivery)."""
        out: list[Delivery] = []
        for stream in self.streams:
            with doing("listing own pending entries"):
                pending = await self._redis.xpending_range(
                    stream, self.group, min="-", max="+", count=self._settings.read_count,
                    consumername=self.name,
                )
            ids = await self._over_limit(stream, pending)
            if ids:
                with doing("claiming own pending entries"):
                    claimed = await self._redis.xclaim(stream, self.group, self.name, 0, list[Any](ids))
                out += await self._decode_all(stream, cast(list[Entry], claimed))
        return out

    async def reclaim(self) -> list[Delivery]:
        """Claim entries that other (dead) consumers left pending longer than `reclaim_idle_ms`;
        entries already delivered `max_deliveries` times are dead-lettered instead."""
        idle = self._settings.reclaim_idle_ms
        out: list[Delivery] = []
        for stream in self.streams:
            with doing("listing idle pending entries"):
                pending = await self._redis.xpending_range(
                    stream, self.group, min="-", max="+", count=self._settings.read_count, idle=idle
                )
            await self._over_limit(stream, pending)
            with doing("reclaiming idle entries"):
                reply = await self._redis.xautoclaim(
                    stream, self.group, self.name, idle, start_id=self._cursors[stream],
                    count=self._settings.read_count,
                )
            cursor, claimed = cast(tuple[bytes, list[Entry]], tuple(reply)[:2])
            self._cursors[stream] = text(cursor)
            out += await self._decode_all(stream, claimed)
        return out

    async def run(self, handler: Handler) -> None:
        """Handle deliveries forever: resume, then read and reclaim; cancel the scope to stop.

        A handler that raises leaves its entry pending: it is redelivered after `reclaim_idle_ms`
        and dead-lettered after `max_deliveries`. Connection loss is retried with backoff.
        """
        await retrying(self.setup, "create consumer groups", group=self.group)
        await self._handle(await retrying(self.resume, "resume pending entries", group=self.group), handler)
        every = self._settings.reclaim_every_s
        next_reclaim = time.monotonic() + every
        backoff = Backoff()
        metrics = self.bus.metrics
        while True:
            try:
                if time.monotonic() >= next_reclaim:
                    await self._handle(await self.reclaim(), handler)
                    next_reclaim = time.monotonic() + every
                await self._handle(await self.read(), handler)
                if backoff.failing:  # it had failed: that was a reconnect
                    metrics.on_reconnect("consumer")
                    backoff.reset()
            except BackendError as exc:
                log.warning("connection lost; retrying", group=self.group, error=str(exc), backoff=backoff.delay)
                metrics.on_redis_error("consumer")
                await backoff.wait()

    async def _handle(self, deliveries: list[Delivery], handler: Handler) -> None:
        done: list[Delivery] = []
        failed: list[str] = []
        for delivery in deliveries:
            # Every line logged while the handler runs names the message it handles.
            with structlog.contextvars.bound_contextvars(message_id=delivery.message.id):
                try:
                    await handler(delivery)
                except Exception:
                    log.exception("handler failed; entry stays pending", entry=delivery.entry_id,
                                  kind=delivery.message.kind, group=self.group)
                    failed.append(delivery.message.kind)
                else:
                    done.append(delivery)
        await self.ack(done)
        if deliveries:
            self.bus.metrics.on_handled(self.group, [d.message.kind for d in done], failed)

    async def _over_limit(self, stream: str, pending: Sequence[dict[str, Any]]) -> list[str]:
        """Dead-letter entries delivered too often; return the ids of the others."""
        keep: list[str] = []
        limit = self._settings.max_deliveries
        for row in pending:
            entry = text(row["message_id"])
            times = int(str(row["times_delivered"]))
            if times >= limit:
                reason = f"delivered {times} times without an ack (max_deliveries={limit})"
                kind = await self.bus.kind_of(stream, entry) if self.bus.metrics.enabled else "unknown"
                await self.bus.dead_letter(stream, self.group, entry, reason, self.name, kind=kind)
            else:
                keep.append(entry)
        return keep

    async def _decode_all(self, stream: str, entries: Sequence[Entry]) -> list[Delivery]:
        out: list[Delivery] = []
        limit = self._settings.max_message_bytes
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields is None:  # trimmed away before we read it: nothing left to handle
                await self._ack_ids({stream: [entry_id]})
                continue
            try:
                raw = fields.get(FIELD_BYTES)
                if raw is None or len(fields) != 1:
                    raise DecodeError(f"stream entry must have exactly one field {FIELD!r} holding the JSON")
                msg = decode(raw, limit)
            except DecodeError as exc:
                await self.bus.dead_letter(stream, self.group, entry_id, exc.reason, self.name, kind="undecodable")
                continue
            if msg.expired():
                log.debug("expired message skipped", entry=entry_id, ttl=msg.ttl)
                await self._ack_ids({stream: [entry_id]})
                continue
            out.append(Delivery(stream, entry_id, msg))
        return out


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def get(name: str) -> str:
        return fields.get(name.encode(), b"").decode("utf-8", "replace")

    return DeadLetter(
        id=entry_id.decode(), stream=get("stream"), entry=get("entry"), group=get("group"),
        consumer=get("consumer"), reason=get("reason"), at=int(get("at") or 0),
        raw=fields.get(b"raw", b""),
    )
