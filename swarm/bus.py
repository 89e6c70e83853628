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
from swarm.errors import BackendError, DecodeError, Forbidden, RateLimited
from swarm.keys import FIELD, FIELD_BYTES, Keys
from swarm.lua import Scripts
from swarm.protocol import Message, decode, encode, now_ms
from swarm.recorder import Recorder
from swarm.settings import Settings

log = structlog.get_logger("swarm.bus")

PUBLISH_CHUNK = 1_000
"""Messages per EVALSHA in `publish_many`: big enough to amortise, small enough not to stall Redis."""
RAW_KEPT = 4_096
"""Bytes of the rejected entry a dead letter keeps (its `size` field says how many there were): a
flood of oversize junk must not fill the server's memory with copies of itself."""
RECLAIM_PAGES = 8
"""Pages of `read_count` pending entries that one `reclaim` (or `resume`) looks through per stream at
most: a backlog of thousands of dead entries is worked off over several rounds, never in one call
that keeps the consumer from its new entries."""
LOG_EVERY_S = 1.0
"""At most one "dead-lettered" warning per consumer in this many seconds, with the count: a flood of
bad entries writes one line a second, not one per entry."""

Entry = tuple[bytes, dict[bytes, bytes] | None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded message as a consumer received it."""

    stream: str
    entry_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream: where it came from, why, and the raw bytes (the first
    `RAW_KEPT` of them: `size` is how many the entry had, `truncated` whether some were cut)."""

    id: str
    stream: str
    entry: str
    group: str
    consumer: str
    reason: str
    at: int
    raw: bytes
    size: int = 0
    truncated: bool = False


Handler = Callable[[Delivery], Awaitable[None]]
Letter = tuple[str, str, str]
"""One entry to dead-letter: (entry id, reason, kind of message; `kind` is only for the metrics)."""


def decode_entry(fields: dict[bytes, bytes], limit: int) -> Message:
    """The message in one stream entry's fields; `DecodeError` (its reason is what the dead letter
    says) when the entry is not the one field `m` or its value does not decode."""
    raw = fields.get(FIELD_BYTES)
    if raw is None or len(fields) != 1:
        raise DecodeError(f"stream entry must have exactly one field {FIELD!r} holding the JSON")
    return decode(raw, limit)


@dataclass(slots=True)
class _Tally:
    """One consumer's dead letters since its last warning."""

    count: int = 0
    first: tuple[str, str, str] = ("", "", "")
    """(stream, entry, reason) of the first of them."""
    logged: float = float("-inf")
    """When the last warning was logged (monotonic seconds)."""


class Bus:
    """Publishing and dead letters for one swarm; `consumer()` builds readers."""

    def __init__(self, redis: Redis, settings: Settings, metrics: Recorder | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.scripts = Scripts(redis)
        self.metrics = metrics or Recorder()
        self._tallies: dict[tuple[str, str], _Tally] = {}
        # The publish script's ARGV before the messages (see swarm/lua/publish.lua), encoded once: a
        # publish is one script call, and every argument redis-py packs costs it client time.
        self._head = [str(v).encode() for v in (settings.stream_maxlen, self.keys.identity(""),
                                                 settings.publish_rate, settings.publish_burst)]
        self._buckets = self.keys.publish_rate

    async def publish(self, msg: Message) -> str:
        """Append `msg` to its recipient's stream; returns the stream entry id.

        Through the publish script, as a batch of one: `Forbidden` when this Redis user may not send
        as `msg.sender` (ACL mode), `RateLimited` when the sender is over its publish rate."""
        args: list[bytes | int | str] = [*self._head, b"2", msg.sender, encode(msg, self.settings.max_message_bytes)]
        [entry] = await self._run([self._buckets, self.keys.stream_for(msg.to)], args, 1, "publishing a message")
        if isinstance(entry, int):
            raise self._rate_limited([msg], [None], {msg.sender: 1}, entry)
        self.metrics.on_publish(msg.kind)
        return text(entry)

    async def publish_many(self, msgs: Iterable[Message]) -> list[str]:
        """Append many messages in few round trips (one script call per chunk); ids in order.

        A sender over its publish rate has its last messages refused (its bucket gives out tokens
        in order) while every other message is written; then `RateLimited` says so, with the ids of
        what was written (`ids`, None where refused). `Forbidden` when this Redis user may not send
        as a sender: that chunk is not written (chunks before it are)."""
        ids: list[str | None] = []
        refused: dict[str, int] = {}
        wait_ms = 0
        listed = list(msgs)
        for start in range(0, len(listed), PUBLISH_CHUNK):
            batch = listed[start : start + PUBLISH_CHUNK]
            streams: dict[str, bytes] = {self._buckets: b"1"}
            args: list[bytes | int | str] = [*self._head]
            limit = self.settings.max_message_bytes
            for msg in batch:
                stream = self.keys.stream_for(msg.to)
                index = streams.get(stream)
                if index is None:  # (encoded once per stream, not once per message)
                    index = streams[stream] = b"%d" % (len(streams) + 1)
                args += (index, msg.sender, encode(msg, limit))
            replies = await self._run(list(streams), args, len(batch), "publishing a batch")
            if not any(isinstance(reply, int) for reply in replies):  # none refused: the usual case
                ids += [cast(bytes, reply).decode() for reply in replies]
                self.metrics.on_publish_many(m.kind for m in batch)
                continue
            kinds: list[str] = []
            for msg, reply in zip(batch, replies, strict=True):
                if isinstance(reply, int):
                    ids.append(None)
                    refused[msg.sender] = refused.get(msg.sender, 0) + 1
                    wait_ms = max(wait_ms, reply)
                else:
                    ids.append(reply.decode())
                    kinds.append(msg.kind)
            self.metrics.on_publish_many(kinds)
        if refused:
            raise self._rate_limited(listed, ids, refused, wait_ms)
        return cast(list[str], ids)

    async def _run(self, keys: list[str], args: list[bytes | int | str], count: int,
                   what: str) -> list[bytes | int]:
        """One call of the publish script: an entry id (bytes) per message, or the ms its sender waits."""
        try:
            with doing(what):
                return cast(list[bytes | int], await self.scripts["publish"](keys=keys, args=args))
        except BackendError as exc:
            if exc.code == "FORBIDDEN":
                self.metrics.on_refused("forbidden", count)
                said = str(exc)
                raise Forbidden(said[said.index("FORBIDDEN ") + len("FORBIDDEN "):]) from None
            raise

    def _rate_limited(self, msgs: Sequence[Message], ids: list[str | None], refused: dict[str, int],
                      wait_ms: int) -> RateLimited:
        count = sum(refused.values())
        self.metrics.on_refused("rate_limited", count)
        settings = self.settings
        if len(refused) == 1:
            who = f"sender {next(iter(refused))} is"
        else:
            who = "senders " + ", ".join(f"{s} ({n} refused)" for s, n in refused.items()) + " are"
        noun = "message" if len(msgs) == 1 else "messages"
        return RateLimited(
            f"{who} over the publish rate limit ({settings.publish_rate:g} messages/s per sender, burst "
            f"{settings.publish_burst}): {count} of {len(msgs)} {noun} refused; retry in {wait_ms / 1000:g} s, "
            "or raise SWARM_PUBLISH_RATE and SWARM_PUBLISH_BURST (SWARM_PUBLISH_RATE=0: no limit)",
            ids=ids, refused=refused, retry_after_s=wait_ms / 1000,
        )

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
        [dl] = await self.dead_letter_many(stream, group, consumer, [(entry_id, reason, kind)])
        return dl

    async def dead_letter_many(self, stream: str, group: str, consumer: str, letters: Sequence[Letter]) -> list[str]:
        """Move pending entries of one stream to the dead-letter stream, each acked in the same step
        as its move (one script call per entry, pipelined); returns the dead letters' ids, in order."""
        if not letters:
            return []
        settings = self.settings
        with doing("dead-lettering entries"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id, reason, _ in letters:
                    await self.scripts["dead_letter"](
                        keys=[stream, self.keys.dlq],
                        args=[group, entry_id, reason, consumer, settings.stream_maxlen, now_ms(), RAW_KEPT],
                        client=pipe,
                    )
                ids = cast(list[bytes], await pipe.execute())
        for _, _, kind in letters:
            self.metrics.on_dead_letter(kind)
        tally = self._tallies.setdefault((group, consumer), _Tally())
        if not tally.count:
            tally.first = (self.keys.short(stream), letters[0][0], letters[0][1])
        tally.count += len(letters)
        self.log_dead_letters()
        return [text(i) for i in ids]

    def log_dead_letters(self, *, now: bool = False) -> None:
        """Log the dead letters not logged yet: one warning per consumer, with the count and the
        first one's stream, entry and reason, at most one per `LOG_EVERY_S` (`now`: whatever the
        time). A consumer's first dead letter after a quiet second is logged at once; consumers call
        this between reads, so the count of a flood's last second is not held back."""
        at = time.monotonic()
        for key, tally in list(self._tallies.items()):
            due = now or at - tally.logged >= LOG_EVERY_S
            if tally.count and due:
                stream, entry, reason = tally.first
                log.warning("dead-lettered", group=key[0], consumer=key[1], count=tally.count, stream=stream,
                            entry=entry, reason=reason)
                tally.count, tally.logged = 0, at
            elif not tally.count and due:
                del self._tallies[key]  # quiet for a second: its next dead letter is logged at once

    async def kind_of(self, stream: str, entry_id: str) -> str:
        """The kind of the message in one stream entry (`undecodable`, or `unknown` once trimmed)."""
        [kind] = await self.kinds_of(stream, [entry_id])
        return kind

    async def kinds_of(self, stream: str, entry_ids: Sequence[str]) -> list[str]:
        """The kinds of the messages in stream entries (pipelined), as `kind_of` names them."""
        with doing("reading stream entries"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in entry_ids:
                    pipe.xrange(stream, entry_id, entry_id, count=1)
                replies = cast(list[list[Entry]], await pipe.execute())
        kinds: list[str] = []
        for rows in replies:
            raw = (rows[0][1] or {}).get(FIELD_BYTES) if rows else None
            if raw is None:
                kinds.append("unknown")
                continue
            try:
                kinds.append(decode(raw, self.settings.max_message_bytes).kind)
            except DecodeError:
                kinds.append("undecodable")
        return kinds

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
        self._cursors = dict.fromkeys(self.streams, "-")
        """Per stream, where the next `reclaim` goes on scanning the pending entries (`-`: the start)."""
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
        self.bus.log_dead_letters()  # the count of a flood that has stopped, once its second is up
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
        """Take back this consumer's own pending entries after a restart (counting the redelivery);
        those already delivered `max_deliveries` times are dead-lettered instead. At most
        `RECLAIM_PAGES` pages of `read_count` per stream: any beyond go idle and `reclaim` takes them."""
        out: list[Delivery] = []
        for stream in self.streams:
            _, ids = await self._scan(stream, "-", idle=None, enough=None)
            out += await self._claim(stream, ids, 0, "claiming own pending entries")
        return out

    async def reclaim(self) -> list[Delivery]:
        """Claim entries that other (dead) consumers left pending longer than `reclaim_idle_ms`;
        entries already delivered `max_deliveries` times are dead-lettered instead.

        Each call goes on where the last one stopped in the pending entries (wrapping round at the
        end), and looks through at most `RECLAIM_PAGES` pages of `read_count` of them per stream, so
        that however long the backlog, every entry is looked at within a few rounds and no round
        holds the consumer up for long."""
        idle = self._settings.reclaim_idle_ms
        out: list[Delivery] = []
        for stream in self.streams:
            self._cursors[stream], ids = await self._scan(stream, self._cursors[stream], idle=idle,
                                                          enough=self._settings.read_count)
            out += await self._claim(stream, ids, idle, "reclaiming idle entries")
        return out

    async def _scan(self, stream: str, cursor: str, *, idle: int | None, enough: int | None) -> tuple[str, list[str]]:
        """Page through pending entries from `cursor` (this consumer's own when `idle` is None, else
        anyone's idle that long), dead-lettering those delivered too often, until `enough` are left to
        claim or `RECLAIM_PAGES` pages are read: (where to go on next time, ids to claim)."""
        count = self._settings.read_count
        keep: list[str] = []
        for _ in range(RECLAIM_PAGES):
            with doing("listing pending entries"):
                if idle is None:
                    rows = await self._redis.xpending_range(
                        stream, self.group, min=cursor, max="+", count=count, consumername=self.name)
                else:
                    rows = await self._redis.xpending_range(
                        stream, self.group, min=cursor, max="+", count=count, idle=idle)
            keep += await self._over_limit(stream, rows)
            if len(rows) < count:
                return "-", keep  # the end: the next scan starts again from the beginning
            cursor = "(" + text(rows[-1]["message_id"])  # exclusive: on after the last one seen
            if enough is not None and len(keep) >= enough:
                break
        return cursor, keep

    async def _claim(self, stream: str, ids: list[str], idle: int, what: str) -> list[Delivery]:
        if not ids:
            return []
        # Claimed only if still idle that long: a consumer that took an entry meanwhile keeps it.
        with doing(what):
            claimed = await self._redis.xclaim(stream, self.group, self.name, idle, list[Any](ids))
        return await self._decode_all(stream, cast(list[Entry], claimed))

    async def run(self, handler: Handler) -> None:
        """Handle deliveries forever: resume, then read and reclaim; cancel the scope to stop.

        A handler that raises leaves its entry pending: it is redelivered after `reclaim_idle_ms`
        and dead-lettered after `max_deliveries`. Connection loss is retried with backoff.
        """
        try:
            await self._run(handler)
        finally:
            self.bus.log_dead_letters(now=True)  # what this consumer dead-lettered in its last second

    async def _run(self, handler: Handler) -> None:
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
        over: list[tuple[str, str]] = []
        limit = self._settings.max_deliveries
        for row in pending:
            entry = text(row["message_id"])
            times = int(str(row["times_delivered"]))
            if times >= limit:
                over.append((entry, f"delivered {times} times without an ack (max_deliveries={limit})"))
            else:
                keep.append(entry)
        if over:
            ids = [entry for entry, _ in over]
            kinds = await self.bus.kinds_of(stream, ids) if self.bus.metrics.enabled else ["unknown"] * len(ids)
            letters = [(entry, reason, kind) for (entry, reason), kind in zip(over, kinds, strict=True)]
            await self.bus.dead_letter_many(stream, self.group, self.name, letters)
        return keep

    async def _decode_all(self, stream: str, entries: Sequence[Entry]) -> list[Delivery]:
        out: list[Delivery] = []
        limit = self._settings.max_message_bytes
        skip: list[str] = []
        bad: list[Letter] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields is None:  # trimmed away before we read it: nothing left to handle
                skip.append(entry_id)
                continue
            try:
                msg = decode_entry(fields, limit)
            except DecodeError as exc:
                bad.append((entry_id, exc.reason, "undecodable"))
                continue
            if msg.expired():
                log.debug("expired message skipped", entry=entry_id, ttl=msg.ttl)
                skip.append(entry_id)
                continue
            out.append(Delivery(stream, entry_id, msg))
        await self.bus.dead_letter_many(stream, self.group, self.name, bad)
        if skip:
            await self._ack_ids({stream: skip})
        return out


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    def get(name: str) -> str:
        return fields.get(name.encode(), b"").decode("utf-8", "replace")

    raw = fields.get(b"raw", b"")
    return DeadLetter(
        id=entry_id.decode(), stream=get("stream"), entry=get("entry"), group=get("group"),
        consumer=get("consumer"), reason=get("reason"), at=int(get("at") or 0), raw=raw,
        # Dead letters written before the cap have no `size`: they kept every byte.
        size=int(get("size") or len(raw)), truncated=get("truncated") == "1",
    )
