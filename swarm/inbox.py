"""An agent's mail, read at its turn boundaries: what a shell agent (`swarm inbox`), a model over
MCP or the web API reads between two pieces of work, each message once.

The mail of agent `A` is what was sent to it: its direct inbox (`inbox:A`), the streams of the roles
on its card (`role:R`), and broadcasts (`bus`, messages to `@all`). From the broadcast stream only
`chat` and `command` messages count as mail: the rest of its traffic is every agent's status chatter
(the board writes "working on t-3" there for each claim), which is for the captain and discovery.
Messages `A` sent itself to a role or to everyone are not mail either.

**Why a consumer group, not a cursor key.** `A`'s mail is read through the consumer group
`inbox-reader:A` on each of those streams (PROTOCOL.md section 4). The group is the stream's own
record of how far `A` has read, kept and trimmed with the stream, so there is no new key to keep
in step, and `XINFO GROUPS` shows each reader's lag like any other reader's. Its pending list is what
makes a reader that dies mid-read lose nothing: entries handed out and not yet acknowledged are handed
out again to the next read. It is a group of its own, not the agent runtime's group `A`, so reading
mail never takes an assignment away from a `swarm agent run` of the same name (the assignment shows
in the mail as well).

Reading is in two steps, `fetch` then `ack`, so that a reader acknowledges only what it has shown:
killed in between, the next read shows the same messages again (at least once; never skipped).
`read` does both at once. Where a group starts when it is first made: the direct inbox and the role
streams from their beginning (what was sent to `A` before it ever looked is still its mail), the
broadcast stream from that moment (old broadcasts are history, not mail); `join` makes the groups
early, as an MCP session does when it starts, so that nothing broadcast after that is missed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.exceptions as rex
from redis.asyncio import Redis

from swarm.bus import Bus, Entry
from swarm.connection import doing, text, translate
from swarm.errors import BackendError, DecodeError
from swarm.keys import FIELD, FIELD_BYTES, Keys
from swarm.protocol import Message, decode
from swarm.registry import parse_card
from swarm.settings import Settings

GROUP_PREFIX = "inbox-reader:"
"""The consumer group of agent `A`'s mail is `inbox-reader:A`, on every stream its mail comes from."""
CONSUMER = "reader"
"""The one consumer name in each group: a restarted reader takes back what its predecessor left pending."""
BROADCAST_KINDS = frozenset({"chat", "command"})
"""What counts as mail on the broadcast stream; the rest there is agents' status chatter."""


def group(agent: str) -> str:
    """The consumer group that reads `agent`'s mail."""
    return GROUP_PREFIX + agent


@dataclass(frozen=True, slots=True)
class Mail:
    """What one `fetch` read: the messages for the agent, oldest first, and every entry it read
    (shown or skipped), to acknowledge once the messages have been shown."""

    agent: str
    messages: list[Message]
    entries: dict[str, list[str]] = field(default_factory=dict)
    """Stream -> ids of the entries `ack` acknowledges."""


def describe(msg: Message) -> str:
    """One line saying what a message says, for a terminal or a model."""
    body = msg.body
    match msg.kind:
        case "chat" | "status":
            return cast(str, getattr(body, "text", ""))
        case "assignment":
            b = cast(Any, body)
            line = (f"the captain assigned you task {b.task_id} ({b.task_kind}, token {b.token})"
                    + (f": {b.title}" if b.title else ""))
            for m in b.more or ():
                line += f"; task {m.task_id} ({m.task_kind}, token {m.token})" + (f": {m.title}" if m.title else "")
            return line + ("; already running: no start needed" if b.state == "running" else "")
        case "command":
            b = cast(Any, body)
            args = " ".join(f"{k}={v}" for k, v in b.args.items())
            return f"command {b.name}" + (f" {args}" if args else "")
        case _:
            return body.model_dump_json()


def as_dict(msg: Message) -> dict[str, Any]:
    """A message as JSON for scripts and models: the envelope, the body, and `text` (`describe`)."""
    return {**msg.model_dump(mode="json", exclude_none=True), "text": describe(msg)}


class Inbox:
    """Reads agents' mail, each message once (see the module doc)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.name)
        self.bus = Bus(redis, settings)

    async def streams(self, agent: str) -> list[str]:
        """The streams `agent`'s mail comes from: its inbox, its card's roles, the broadcast stream."""
        with doing("reading an agent card"):
            raw = await self.redis.hget(self.keys.agents, agent)
        card = None if raw is None else parse_card(agent, raw)
        roles = card.roles if card is not None else ()
        return [self.keys.inbox(agent), *(self.keys.role(r) for r in roles), self.keys.bus]

    async def join(self, agent: str) -> list[str]:
        """Make `agent`'s reader groups that do not exist yet (idempotent, one round trip); its streams."""
        streams = await self.streams(agent)
        with doing("creating the inbox reader's groups"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xgroup_create(stream, group(agent), id="$" if stream == self.keys.bus else "0",
                                       mkstream=True)
                replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, rex.RedisError) and not str(reply).startswith("BUSYGROUP"):  # BUSYGROUP: made
                raise translate(reply, "XGROUP")
        return streams

    async def fetch(self, agent: str, wait_s: float = 0.0) -> Mail:
        """The agent's unread mail, oldest first, without acknowledging it (`ack` does, once shown).
        First whatever an earlier reader was handed and never acknowledged, else new messages; with
        `wait_s`, blocks up to that long for the first one."""
        streams = await self.join(agent)
        entries: dict[str, list[str]] = {}
        found = await self._read(agent, streams, "0", None, entries)  # left pending by a reader that died
        deadline = time.monotonic() + wait_s
        while not found:
            left = deadline - time.monotonic()
            found = await self._read(agent, streams, ">", int(left * 1000) if left >= 0.001 else None, entries)
            if found or left < 0.001:
                break
        found.sort(key=lambda pair: _order(pair[0]))
        return Mail(agent, [msg for _, msg in found], entries)

    async def ack(self, mail: Mail) -> None:
        """Acknowledge everything `mail` read: the next fetch starts after it."""
        if not mail.entries:
            return
        with doing("acknowledging read mail"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, ids in mail.entries.items():
                    pipe.xack(stream, group(mail.agent), *ids)
                await pipe.execute()

    async def read(self, agent: str, wait_s: float = 0.0) -> list[Message]:
        """Fetch the agent's unread mail and acknowledge it at once (for callers that cannot show it
        first and acknowledge after, such as a tool call's reply)."""
        mail = await self.fetch(agent, wait_s)
        await self.ack(mail)
        return mail.messages

    async def _read(self, agent: str, streams: Sequence[str], start: str, block_ms: int | None,
                    entries: dict[str, list[str]]) -> list[tuple[str, Message]]:
        """One XREADGROUP over every stream from `start` (`0`: own pending entries, `>`: new ones);
        the entries read are added to `entries`, the mail among them returned with its entry id."""
        try:
            with doing("reading an agent's mail"):
                reply = await self.redis.xreadgroup(group(agent), CONSUMER, dict.fromkeys(streams, start),
                                                    count=self.settings.read_count, block=block_ms)
        except BackendError as exc:
            if exc.code != "NOGROUP":
                raise
            await self.join(agent)  # a stream was deleted under us since `join`: make its group again
            return []
        found: list[tuple[str, Message]] = []
        for stream_b, rows in cast(list[tuple[bytes, list[Entry]]], reply or []):
            stream = text(stream_b)
            for entry_b, fields in rows:
                entry = text(entry_b)
                if fields is None:  # trimmed away before it was read: nothing to show, acknowledge it
                    entries.setdefault(stream, []).append(entry)
                    continue
                msg = await self._decode(agent, stream, entry, fields)
                if msg is None:  # dead-lettered, which acknowledges it
                    continue
                entries.setdefault(stream, []).append(entry)
                if self._is_mail(agent, stream, msg):
                    found.append((entry, msg))
        return found

    async def _decode(self, agent: str, stream: str, entry: str, fields: dict[bytes, bytes]) -> Message | None:
        """The message in one entry, or None once an entry that does not decode is dead-lettered (with
        the reason a bus consumer gives, PROTOCOL.md section 5)."""
        raw = fields.get(FIELD_BYTES)
        try:
            if raw is None or len(fields) != 1:
                raise DecodeError(f"stream entry must have exactly one field {FIELD!r} holding the JSON")
            return decode(raw, self.settings.max_message_bytes)
        except DecodeError as exc:
            await self.bus.dead_letter(stream, group(agent), entry, exc.reason, CONSUMER, kind="undecodable")
            return None

    def _is_mail(self, agent: str, stream: str, msg: Message) -> bool:
        if msg.expired():
            return False
        if stream == self.keys.inbox(agent):
            return True
        if msg.sender == agent:  # what it said to its role or to everyone
            return False
        return stream != self.keys.bus or msg.kind in BROADCAST_KINDS


def _order(entry: str) -> tuple[int, int]:
    """Stream entry ids from one server sort by time across streams: `<ms>-<seq>`."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)
