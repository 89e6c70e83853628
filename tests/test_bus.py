"""The bus against a real server: delivery, consumer groups, reclaim, dead letters, trimming.

The invariant every test leans on: each published entry ends acked, pending, or dead-lettered.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis
from structlog.testing import capture_logs

from swarm.bus import LOG_EVERY_S, RAW_KEPT, RECLAIM_PAGES, Bus, Consumer, DeadLetter, Delivery
from swarm.connection import open_redis
from swarm.errors import DecodeError, MessageTooLarge
from swarm.keys import FIELD
from swarm.protocol import ChatBody, Message, StatusBody, decode, message, new_id, now_ms
from swarm.settings import Settings
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocols" / "vectors"
PROCS = Path(__file__).resolve().parent / "procs"


def chat(text: str, sender: str = "a1", to: str = "@all") -> Message:
    """A chat message."""
    return message(ChatBody(text=text), sender=sender, to=to)


async def drain(consumer: Consumer, want: int, within: float = 5.0) -> list[Delivery]:
    """Read until `want` deliveries arrived (failing after `within` seconds), then ack them."""
    got: list[Delivery] = []
    with anyio.fail_after(within):
        while len(got) < want:
            batch = await consumer.read()
            await consumer.ack(batch)
            got += batch
    return got


async def pending(redis: Redis, stream: str, group: str) -> int:
    """How many entries of `group` on `stream` are delivered but not acked."""
    summary: dict[str, Any] = await redis.xpending(stream, group)
    return int(summary["pending"])


async def run_until(consumer: Consumer, handler: Callable[[Delivery], Awaitable[None]],
                    done: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Run `consumer` with `handler` until `await done()` holds, then stop it."""
    with anyio.fail_after(within):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run, handler)
            while True:
                if await done():
                    break
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


async def xadd(redis: Redis, stream: str, fields: dict[str, bytes] | dict[str, str]) -> str:
    """A raw XADD, as any client (or `redis-cli`) may do; returns the entry id."""
    entry = cast(bytes, await redis.xadd(stream, fields))  # type: ignore[arg-type]
    return entry.decode()


# --- delivery -----------------------------------------------------------------------------------


def valid_vectors() -> list[Message]:
    """The valid conformance vectors, stamped now so that none has outlived its ttl."""
    return [decode(p.read_bytes()).model_copy(update={"ts": now_ms()})
            for p in sorted((VECTORS / "valid").glob("*.json"))]


async def test_every_kind_round_trips_to_its_recipients_stream(bus: Bus) -> None:
    sent = valid_vectors()
    streams = sorted({bus.keys.stream_for(m.to) for m in sent})
    assert len(streams) >= 5  # @all, @captain, agent inboxes and a role all appear among the vectors
    reader = bus.consumer("audit", "r1", streams, start="0")
    await reader.setup()
    for msg in sent:
        await bus.publish(msg)
    got = {d.message.id: d for d in await drain(reader, len(sent))}
    assert len(got) == len(sent)
    for msg in sent:
        assert got[msg.id].message == msg
        assert got[msg.id].stream == bus.keys.stream_for(msg.to)


async def test_publish_many_delivers_every_kind_in_order(bus: Bus) -> None:
    sent = valid_vectors()
    reader = bus.consumer("audit", "r1", sorted({bus.keys.stream_for(m.to) for m in sent}), start="0")
    await reader.setup()
    ids = await bus.publish_many(sent)
    assert len(ids) == len(sent)
    got = await drain(reader, len(sent))
    assert {(d.stream, d.entry_id): d.message for d in got} == {
        (bus.keys.stream_for(m.to), i): m for i, m in zip(ids, sent, strict=True)
    }


async def test_the_entry_layout_is_one_field_m_holding_the_json(bus: Bus, redis: Redis) -> None:
    msg = chat("layout")
    entry = await bus.publish(msg)
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(bus.keys.bus, entry, entry))
    [(entry_id, fields)] = rows
    assert entry_id.decode() == entry
    assert list(fields) == [b"m"]
    assert decode(fields[b"m"]) == msg


async def test_broadcast_fans_out_one_group_per_reader(bus: Bus) -> None:
    readers = [bus.consumer(name, name, [bus.keys.bus]) for name in ("agent-1", "agent-2", "captain")]
    for r in readers:
        await r.setup()
    sent = [chat(str(i)) for i in range(10)]
    await bus.publish_many(sent)
    for r in readers:
        assert [d.message for d in await drain(r, 10)] == sent


async def test_a_role_stream_reaches_every_agent_with_the_role(bus: Bus) -> None:
    stream = bus.keys.stream_for("@role:audit")
    assert stream == bus.keys.role("audit")
    readers = [bus.consumer(name, name, [stream]) for name in ("agent-1", "agent-2")]
    for r in readers:
        await r.setup()
    msg = message(StatusBody(text="audit wanted"), sender="captain", to="@role:audit")
    await bus.publish(msg)
    for r in readers:
        assert [d.message for d in await drain(r, 1)] == [msg]


async def test_instances_of_one_agent_share_its_inbox_group(bus: Bus) -> None:
    inbox = bus.keys.inbox("agent-1")
    first = bus.consumer("agent-1", "agent-1#a", [inbox])
    second = bus.consumer("agent-1", "agent-1#b", [inbox])
    await first.setup()
    await second.setup()
    sent = [chat(str(i), to="agent-1") for i in range(20)]
    await bus.publish_many(sent)
    got = [d.message for d in await first.read()] + [d.message for d in await second.read()]
    assert sorted(got, key=lambda m: int(m.body.text)) == sent  # type: ignore[union-attr]


async def test_expired_messages_are_acked_and_skipped(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    stale = message(ChatBody(text="stale"), sender="a1", ts=1_000, ttl=1.0)
    fresh = message(ChatBody(text="fresh"), sender="a1", ttl=60.0)
    await bus.publish_many([stale, fresh])
    assert [d.message for d in await drain(reader, 1)] == [fresh]
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_publish_refuses_an_oversize_message_and_writes_nothing(bus: Bus, redis: Redis) -> None:
    with pytest.raises(MessageTooLarge) as caught:
        await bus.publish(chat("\U0001f600" * 16_384))  # the most text allows, 4 bytes a character
    assert str(caught.value).startswith("message is 65")
    assert str(caught.value).endswith("over the 65536-byte limit; send large payloads by reference")
    assert await redis.exists(bus.keys.bus) == 0


# --- consumer groups: resume, reclaim, max deliveries ------------------------------------------


async def test_a_restarted_consumer_resumes_its_own_pending_entries(bus: Bus, redis: Redis) -> None:
    inbox = bus.keys.inbox("worker")
    sent = [chat(str(i), to="worker") for i in range(5)]
    await bus.publish_many(sent)
    before = bus.consumer("worker", "worker", [inbox], start="0")
    await before.setup()
    assert [d.message for d in await before.read()] == sent  # taken, then the process "dies"
    assert await pending(redis, inbox, "worker") == 5

    after = bus.consumer("worker", "worker", [inbox], start="0")  # same name: the restart
    await after.setup()
    resumed = await after.resume()
    assert [d.message for d in resumed] == sent
    await after.ack(resumed)
    assert await pending(redis, inbox, "worker") == 0
    await bus.publish(chat("new", to="worker"))
    assert [d.message.body for d in await after.read()] == [ChatBody(text="new")]


async def test_resume_dead_letters_an_entry_past_max_deliveries(bus: Bus, redis: Redis) -> None:
    inbox = bus.keys.inbox("worker")
    poison = chat("crashes the worker", to="worker")
    entry = await bus.publish(poison)
    worker = bus.consumer("worker", "worker", [inbox], start="0")
    await worker.setup()
    assert len(await worker.read()) == 1  # delivery 1
    assert len(await worker.resume()) == 1  # delivery 2
    assert len(await worker.resume()) == 1  # delivery 3 = max_deliveries in the test settings
    assert await worker.resume() == []
    [letter] = await bus.dead_letters()
    assert (letter.stream, letter.entry, letter.group, letter.consumer) == (inbox, entry, "worker", "worker")
    assert letter.reason == "delivered 3 times without an ack (max_deliveries=3)"
    assert decode(letter.raw) == poison
    assert await pending(redis, inbox, "worker") == 0


async def test_a_failing_handler_ends_in_the_dead_letters_while_others_flow(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    handled: list[str] = []

    async def handler(d: Delivery) -> None:
        text = d.message.body.text  # type: ignore[union-attr]
        if text == "poison":
            raise RuntimeError("handler bug")
        handled.append(text)

    await bus.publish(chat("poison"))
    await bus.publish_many([chat(str(i)) for i in range(10)])

    letters: list[DeadLetter] = []

    async def done() -> bool:
        letters[:] = await bus.dead_letters()
        return len(handled) == 10 and bool(letters)

    await run_until(reader, handler, done)
    assert handled == [str(i) for i in range(10)]
    assert [letter.reason for letter in letters] == ["delivered 3 times without an ack (max_deliveries=3)"]
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_entries_of_a_consumer_killed_with_sigkill_are_reclaimed(
    bus: Bus, redis: Redis, settings: Settings
) -> None:
    inbox = bus.keys.inbox("worker")
    sent = [chat(str(i), to="worker") for i in range(30)]
    await bus.publish_many(sent)
    cmd = [sys.executable, str(PROCS / "consumer.py"), "--url", str(settings.redis_url), "--swarm", settings.name,
           "--stream", "inbox:worker", "--group", "worker", "--name", "worker#doomed", "--take", "30", "--ack", "10"]
    with anyio.fail_after(20):
        async with await anyio.open_process(cmd) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            buffer = b""
            while b"ready\n" not in buffer:
                try:
                    buffer += await proc.stdout.receive()
                except anyio.EndOfStream:
                    pytest.fail(f"consumer.py died: {b''.join([c async for c in proc.stderr]).decode()}")
            proc.kill()  # SIGKILL: no cleanup, no ack, its entries stay pending under its name
            assert await proc.wait() == -9
    report = buffer.decode().splitlines()
    acked = {line.split()[1] for line in report if line.startswith("acked ")}
    held = {line.split()[1] for line in report if line.startswith("held ")}
    assert (len(acked), len(held)) == (10, 20)
    summary = await redis.xpending(inbox, "worker")
    assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [(b"worker#doomed", 20)]

    rescuer = bus.consumer("worker", "worker#rescuer", [inbox])
    got: list[str] = []
    complete_at: list[float] = []

    async def handler(d: Delivery) -> None:
        got.append(d.message.id)

    async def all_back_and_settled() -> bool:
        # Keep running past reclaim_idle_ms once all are back: a wrongful second claim would show.
        if len(got) >= 20 and not complete_at:
            complete_at.append(anyio.current_time())
        return bool(complete_at) and anyio.current_time() - complete_at[0] > 0.4

    await run_until(rescuer, handler, all_back_and_settled)
    assert sorted(got) == sorted(held)
    assert acked | held == {m.id for m in sent}
    assert await pending(redis, inbox, "worker") == 0
    assert await bus.dead_letters() == []


async def left_pending(bus: Bus, redis: Redis, n: int, *, deliveries: Callable[[int], int]) -> list[str]:
    """`n` entries that consumer `dead` of group `g` took and died with, entry `i` delivered
    `deliveries(i)` times (XCLAIM's RETRYCOUNT sets the counter, as that many redeliveries would)."""
    ids = await bus.publish_many([chat(str(i)) for i in range(n)])
    taker = Bus(redis, bus.settings.model_copy(update={"read_count": n}))  # takes all n in one read
    dead = taker.consumer("g", "dead", [bus.keys.bus], start="0")
    await dead.setup()
    assert len(await dead.read()) == n
    for i, entry in enumerate(ids):
        await redis.xclaim(bus.keys.bus, "g", "dead", 0, [entry], retrycount=deliveries(i), justid=True)
    return ids


async def test_reclaim_dead_letters_every_entry_past_max_deliveries_however_deep_in_the_backlog(
    redis: Redis, settings: Settings
) -> None:
    # Pages of 4: the entries past the limit sit behind the first page, where a scan that never
    # moves on from the start (and a claim that never checks) would let them through again.
    bus = Bus(redis, settings.model_copy(update={"read_count": 4}))
    ids = await left_pending(bus, redis, 40, deliveries=lambda i: 1 if i < 8 else 3)
    await anyio.sleep(0.25)  # past reclaim_idle_ms: the dead consumer's entries are up for grabs
    rescuer = bus.consumer("g", "rescuer", [bus.keys.bus])
    delivered: list[str] = []
    for _ in range(6):
        got = await rescuer.reclaim()
        delivered += [d.entry_id for d in got]
        await rescuer.ack(got)
    assert delivered == ids[:8]  # the ones under the limit, once each
    letters = await bus.dead_letters(1000)
    assert [d.entry for d in letters[::-1]] == ids[8:]  # every one past it, none delivered again
    assert {d.reason for d in letters} == {"delivered 3 times without an ack (max_deliveries=3)"}
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_one_reclaim_works_through_a_bounded_part_of_the_backlog(redis: Redis, settings: Settings) -> None:
    bus = Bus(redis, settings.model_copy(update={"read_count": 4}))
    await left_pending(bus, redis, 100, deliveries=lambda i: 3)
    await anyio.sleep(0.25)
    rescuer = bus.consumer("g", "rescuer", [bus.keys.bus])
    dead_lettered: list[int] = []
    for _ in range(5):
        assert await rescuer.reclaim() == []
        dead_lettered.append(await redis.xlen(bus.keys.dlq))
    # At most RECLAIM_PAGES pages of read_count entries per call: the consumer gets back to its
    # new entries between them, and a few rounds clear the backlog.
    assert RECLAIM_PAGES * 4 == 32
    assert dead_lettered == [32, 64, 96, 100, 100]
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_resume_dead_letters_own_entries_past_max_deliveries_beyond_the_first_page(
    redis: Redis, settings: Settings
) -> None:
    bus = Bus(redis, settings.model_copy(update={"read_count": 4}))
    ids = await bus.publish_many([chat(str(i)) for i in range(12)])
    worker = bus.consumer("g", "worker", [bus.keys.bus], start="0")
    await worker.setup()
    assert sum([len(await worker.read()) for _ in range(3)]) == 12
    for entry in ids[4:]:  # past the limit: all but the first page
        await redis.xclaim(bus.keys.bus, "g", "worker", 0, [entry], retrycount=3, justid=True)
    restarted = bus.consumer("g", "worker", [bus.keys.bus], start="0")
    assert [d.entry_id for d in await restarted.resume()] == ids[:4]
    assert [d.entry for d in (await bus.dead_letters())[::-1]] == ids[4:]
    assert await pending(redis, bus.keys.bus, "g") == 4  # the resumed ones, being handled


async def test_reclaim_skips_entries_trimmed_while_pending(bus: Bus, redis: Redis) -> None:
    await bus.publish_many([chat(str(i)) for i in range(5)])
    dead = bus.consumer("g", "dead", [bus.keys.bus], start="0")
    await dead.setup()
    assert len(await dead.read()) == 5
    await redis.xtrim(bus.keys.bus, maxlen=0)
    await anyio.sleep(0.25)
    alive = bus.consumer("g", "alive", [bus.keys.bus], start="0")
    assert await alive.reclaim() == []
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_a_consumer_recreates_its_group_when_the_stream_is_deleted(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    await redis.delete(bus.keys.bus)
    assert await reader.read() == []
    await bus.publish(chat("after"))
    assert [d.message.body for d in await drain(reader, 1)] == [ChatBody(text="after")]


# --- dead letters -------------------------------------------------------------------------------


def invalid_vectors() -> list[tuple[str, dict[str, Any]]]:
    """(name, vector) for every invalid conformance vector."""
    return [(p.stem, json.loads(p.read_text())) for p in sorted((VECTORS / "invalid").glob("*.json"))]


def entry_fields(vector: dict[str, Any]) -> dict[str, bytes]:
    """The stream-entry fields a vector stands for."""
    if "fields" in vector:
        return {k: str(v).encode() for k, v in vector["fields"].items()}
    if "raw_base64" in vector:
        return {FIELD: base64.b64decode(vector["raw_base64"])}
    return {FIELD: str(vector["raw"]).encode()}


def expected_raw(fields: dict[str, bytes]) -> bytes:
    """What the dead letter holds: the `m` value, or the entry's field list as a JSON array (of
    which it keeps the first `RAW_KEPT` bytes)."""
    if list(fields) == [FIELD]:
        return fields[FIELD]
    return json.dumps([x for kv in fields.items() for x in (kv[0], kv[1].decode())], separators=(",", ":")).encode()


async def test_every_invalid_vector_is_dead_lettered_with_its_reason_as_valid_traffic_flows(
    redis: Redis, settings: Settings
) -> None:
    by_limit: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for name, vector in invalid_vectors():
        by_limit.setdefault(int(vector.get("max_bytes", settings.max_message_bytes)), []).append((name, vector))
    for limit, vectors in by_limit.items():
        bus = Bus(redis, settings.model_copy(update={"max_message_bytes": limit}))
        stream = bus.keys.role(f"limit-{limit}")
        reader = bus.consumer("g", "c1", [stream])
        await reader.setup()
        expected: dict[str, tuple[str, bytes, int, bool]] = {}
        sent: list[Message] = []
        for name, vector in vectors:  # each bad entry is followed by a good one
            fields = entry_fields(vector)
            entry = await xadd(redis, stream, fields)
            raw = expected_raw(fields)
            expected[entry] = (vector["reason"], raw[:RAW_KEPT], len(raw), len(raw) > RAW_KEPT)
            sent.append(chat(name, to=f"@role:limit-{limit}"))
            await bus.publish(sent[-1])
        got = [d.message for d in await drain(reader, len(sent))]
        assert got == sent
        letters = {d.entry: d for d in await bus.dead_letters(1000) if d.stream == stream}
        assert {e: (d.reason, d.raw, d.size, d.truncated) for e, d in letters.items()} == expected
        assert {(d.group, d.consumer) for d in letters.values()} == {("g", "c1")}
        assert await pending(redis, stream, "g") == 0


async def test_oversize_input_at_the_default_limit_is_dead_lettered(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    junk = json.dumps({"kind": "chat", "sender": "a", "body": {"text": "x" * 70_000}}).encode()
    await redis.xadd(bus.keys.bus, {FIELD: junk})
    await bus.publish(chat("after"))
    assert [d.message.body for d in await drain(reader, 1)] == [ChatBody(text="after")]
    [letter] = await bus.dead_letters()
    assert letter.reason == f"message is {len(junk)} bytes, over the 65536-byte limit; send large payloads by reference"
    # Only the first 4 KiB are kept, and the dead letter says so: a flood of oversize junk must not
    # fill the server with copies of itself.
    assert (letter.raw, letter.size, letter.truncated) == (junk[:4096], len(junk), True)
    [fields] = await dlq_fields(redis, bus)
    assert (fields[b"size"], fields[b"truncated"], len(fields[b"raw"])) == (str(len(junk)).encode(), b"1", 4096)


async def dlq_fields(redis: Redis, bus: Bus) -> list[dict[bytes, bytes]]:
    """The fields of every dead letter as stored, oldest first."""
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(bus.keys.dlq))
    return [fields for _, fields in rows]


async def test_a_dead_letter_of_a_small_entry_keeps_every_byte_and_says_so(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    junk = b"x" * RAW_KEPT  # exactly the bytes kept: nothing cut
    await redis.xadd(bus.keys.bus, {FIELD: junk})
    assert await reader.read() == []
    [letter] = await bus.dead_letters()
    assert (letter.raw, letter.size, letter.truncated) == (junk, RAW_KEPT, False)
    [fields] = await dlq_fields(redis, bus)
    assert list(fields) == [b"stream", b"entry", b"group", b"consumer", b"reason", b"at", b"size", b"truncated",
                            b"raw"]
    assert (fields[b"size"], fields[b"truncated"]) == (b"4096", b"0")


async def test_a_flood_of_bad_entries_logs_one_warning_a_second_with_the_count(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    flood = 3_000
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(flood):
            pipe.xadd(bus.keys.bus, {FIELD: b"not json"})
        ids = [e.decode() for e in await pipe.execute()]
    started = anyio.current_time()
    with capture_logs() as logs:
        with anyio.fail_after(30):
            while await pending(redis, bus.keys.bus, "g") or await redis.xlen(bus.keys.dlq) < flood:
                assert await reader.read() == []
        took = anyio.current_time() - started
        bus.log_dead_letters(now=True)  # what the last second held back
    warnings = [line for line in logs if line["event"] == "dead-lettered"]
    reason = "invalid JSON: expected ident at line 1 column 2"
    # The first read's batch is logged at once, as one line...
    assert warnings[0] == {"event": "dead-lettered", "log_level": "warning", "group": "g", "consumer": "c1",
                           "count": 128, "stream": "bus", "entry": ids[0], "reason": reason}
    # ...then at most one line a second, each with the count and the first of its dead letters.
    assert len(warnings) <= took / LOG_EVERY_S + 2
    assert sum(line["count"] for line in warnings) == flood
    assert all(line["reason"] == reason and line["entry"] in ids for line in warnings)


async def test_dead_letters_are_listed_newest_first_with_where_they_came_from(bus: Bus, redis: Redis) -> None:
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()
    entries = [await xadd(redis, bus.keys.bus, {FIELD: f"junk {i}"}) for i in range(3)]
    assert await reader.read() == []
    letters = await bus.dead_letters()
    assert [d.entry for d in letters] == entries[::-1]
    assert [d.raw for d in letters] == [b"junk 2", b"junk 1", b"junk 0"]
    assert all(d.stream == bus.keys.bus and d.group == "g" and d.consumer == "c1" for d in letters)
    assert all(d.reason.startswith("invalid JSON: ") and d.at > 0 for d in letters)
    assert [d.entry for d in await bus.dead_letters(count=1)] == entries[-1:]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
VALID_CHAT = {"v": 1, "kind": "chat", "sender": "a", "body": {"text": "hi"}}
hostile = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(st.sampled_from(["kind", "v", "sender", "to", "ts", "body", "tags", "priority"]), json_values).map(
        lambda kv: json.dumps({**VALID_CHAT, kv[0]: kv[1]}).encode()
    ),
    st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4).map(
        lambda extra: json.dumps({**VALID_CHAT, "body": {"text": "hi", **extra}}).encode()
    ),
    st.sampled_from([b"\x00" * 50, b"\x1b[2J\x1b[H", "\u202e\ufeff".encode(), b"[" * 500, b"1e99999"]),
)


@pytest.mark.anyio
@hsettings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(hostile, min_size=1, max_size=8))
async def test_hostile_input_is_dead_lettered_and_nothing_valid_is_lost(
    redis: Redis, settings: Settings, payloads: Sequence[bytes]
) -> None:
    bus = Bus(redis, settings)
    stream = bus.keys.inbox(f"h-{new_id()}")  # a fresh stream per example: the server is shared
    reader = bus.consumer("g", "c1", [stream])
    await reader.setup()
    markers: list[Message] = []
    outcome: dict[str, str | None] = {}  # entry -> expected dead-letter reason, or None if it decodes
    for i, raw in enumerate(payloads):
        entry = await xadd(redis, stream, {FIELD: raw})
        try:
            decode(raw)
        except DecodeError as exc:
            outcome[entry] = exc.reason
        else:
            outcome[entry] = None
        markers.append(chat(f"marker {i}", to=stream.rsplit(":", 1)[1]))
        await bus.publish(markers[-1])
    delivered: dict[str, Delivery] = {}
    with anyio.fail_after(10):
        while not all(m.id in {d.message.id for d in delivered.values()} for m in markers):
            batch = await reader.read()
            await reader.ack(batch)
            delivered.update((d.entry_id, d) for d in batch)
    marker_ids = {m.id for m in markers}
    assert [d.message for d in delivered.values() if d.message.id in marker_ids] == markers
    letters = {d.entry: d.reason for d in await bus.dead_letters(1000) if d.stream == stream}
    for entry, reason in outcome.items():
        if reason is None:  # it decodes, so it is delivered (or, with a ttl that ran out, skipped)
            assert entry not in letters
            assert entry in delivered or decode(payloads[list(outcome).index(entry)]).ttl is not None
        else:
            assert letters.get(entry) == reason
    assert await pending(redis, stream, "g") == 0


# --- bounds and concurrency --------------------------------------------------------------------


async def test_trimming_keeps_streams_bounded(redis: Redis, settings: Settings) -> None:
    # 3,300 messages from one sender at once: more than the default burst (this is about trimming).
    bus = Bus(redis, settings.model_copy(update={"stream_maxlen": 100, "publish_rate": 0}))
    for i in range(300):
        await bus.publish(chat(f"one {i}"))
    await bus.publish_many([chat(f"many {i}") for i in range(3_000)])
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default), so a little slack is normal.
    assert 100 <= await redis.xlen(bus.keys.bus) <= 300
    # The dead-letter stream is trimmed the same way, however much junk arrives.
    junk = bus.keys.inbox("junk")
    reader = bus.consumer("junk", "junk", [junk], start="0")
    await reader.setup()
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(500):
            pipe.xadd(junk, {FIELD: b"junk"})
        await pipe.execute()
    with anyio.fail_after(10):
        while await pending(redis, junk, "junk") or await redis.xlen(bus.keys.dlq) < 100:
            assert await reader.read() == []
    assert 100 <= await redis.xlen(bus.keys.dlq) <= 300


async def test_many_concurrent_publishers_lose_nothing(settings: Settings, redis: Redis, bus: Bus) -> None:
    tasks, per_task, procs, per_proc = 12, 150, 3, 200
    reader = bus.consumer("g", "c1", [bus.keys.bus])
    await reader.setup()

    async def publisher(n: int) -> None:
        async with open_redis(settings) as own:  # a connection of its own, like a separate agent
            mine = Bus(own, settings)
            msgs = [chat(str(i), sender=f"task-{n}") for i in range(per_task)]
            for msg in msgs[: per_task // 3]:
                await mine.publish(msg)
            for start in range(per_task // 3, per_task, 25):
                await mine.publish_many(msgs[start : start + 25])

    async def process(n: int) -> None:
        cmd = [sys.executable, str(PROCS / "publisher.py"), "--url", str(settings.redis_url),
               "--swarm", settings.name, "--sender", f"proc-{n}", "--count", str(per_proc)]
        done = await anyio.run_process(cmd, check=True)
        assert done.stdout == f"done {per_proc}\n".encode()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(procs):
                tg.start_soon(process, n)
            for n in range(tasks):
                tg.start_soon(publisher, n)
    total = tasks * per_task + procs * per_proc
    got = await drain(reader, total, within=20)
    assert len(got) == total
    assert len({d.message.id for d in got}) == total
    by_sender: dict[str, list[int]] = {}
    for d in got:
        by_sender.setdefault(d.message.sender, []).append(int(d.message.body.text))  # type: ignore[union-attr]
    # Every publisher's messages all arrived, in the order it sent them.
    assert by_sender == {
        **{f"task-{n}": list(range(per_task)) for n in range(tasks)},
        **{f"proc-{n}": list(range(per_proc)) for n in range(procs)},
    }
    assert await pending(redis, bus.keys.bus, "g") == 0


async def test_a_consumer_survives_its_connections_being_killed(bus: Bus, redis: Redis, settings: Settings) -> None:
    # The consumer has its own client (as an agent process would); the server drops every connection
    # but the one asking, the consumer's blocked read included. redis-py reconnects with backoff
    # and the consumer goes on by itself; the publisher's client recovers the same way.
    got: list[str] = []

    async def handle(d: Delivery) -> None:
        got.append(d.message.body.text)  # type: ignore[union-attr]

    async with open_redis(settings) as own:
        consumer = Bus(own, settings).consumer("g", "c1", [bus.keys.bus], start="0")
        await consumer.setup()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run, handle)
            await bus.publish(chat("before"))
            await eventually(lambda: _has(got, "before"))
            killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
            assert int(killed) >= 1  # the consumer's blocked read among them
            await bus.publish(chat("after"))
            await eventually(lambda: _has(got, "after"))
            tg.cancel_scope.cancel()
    assert got == ["before", "after"]
    assert await pending(redis, bus.keys.bus, "g") == 0


async def _has(got: list[str], text: str) -> bool:
    return text in got
