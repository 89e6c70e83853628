"""An agent's mail (`swarm.inbox`): each message once, across restarts, against the real server."""

from __future__ import annotations

import time

import anyio
from redis.asyncio import Redis

from swarm.bus import Bus
from swarm.connection import open_redis
from swarm.inbox import Inbox, as_dict, describe, group
from swarm.keys import FIELD
from swarm.protocol import AssignedTask, AssignmentBody, ChatBody, CommandBody, Message, StatusBody, message
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings


def chat(text: str, to: str = "a1", sender: str = "cli") -> Message:
    return message(ChatBody(text=text), sender=sender, to=to)


def texts(messages: list[Message]) -> list[str]:
    return [describe(m) for m in messages]


async def test_reads_direct_role_and_broadcast_mail_oldest_first(redis: Redis, settings: Settings,
                                                                 bus: Bus) -> None:
    await Registry(redis, settings).register(AgentCard(name="a1", roles=("reviewers",)), "i-1")
    inbox = Inbox(redis, settings)
    await inbox.join("a1")  # broadcasts count from here on
    await bus.publish(chat("direct"))
    await bus.publish(chat("to my role", to="@role:reviewers"))
    await bus.publish(chat("to everyone", to="@all"))
    await bus.publish(message(CommandBody(name="drain", args={"within": 5}), sender="captain", to="@all"))
    await bus.publish(chat("to another agent", to="a2"))
    await bus.publish(chat("to another role", to="@role:writers"))
    got = await inbox.read("a1")
    assert texts(got) == ["direct", "to my role", "to everyone", "command drain within=5"]
    assert [m.to for m in got] == ["a1", "@role:reviewers", "@all", "@all"]


async def test_broadcast_status_chatter_and_own_messages_are_not_mail(redis: Redis, settings: Settings,
                                                                      bus: Bus) -> None:
    await Registry(redis, settings).register(AgentCard(name="a1", roles=("ops",)), "i-1")
    inbox = Inbox(redis, settings)
    await inbox.join("a1")
    await bus.publish(message(StatusBody(text="working on t-1", state="working"), sender="a2"))
    await bus.publish(chat("my own broadcast", to="@all", sender="a1"))
    await bus.publish(chat("my own word to my role", to="@role:ops", sender="a1"))
    await bus.publish(chat("a note to myself", sender="a1"))
    assert texts(await inbox.read("a1")) == ["a note to myself"]
    # The skipped entries were acknowledged too: nothing is pending, nothing comes back.
    for stream in await inbox.streams("a1"):
        assert (await redis.xpending(stream, group("a1")))["pending"] == 0
    assert await inbox.read("a1") == []


async def test_read_acknowledges_so_nothing_is_read_twice(redis: Redis, settings: Settings, bus: Bus) -> None:
    inbox = Inbox(redis, settings)
    await bus.publish(chat("one"))
    await bus.publish(chat("two"))
    assert texts(await inbox.read("a1")) == ["one", "two"]
    assert await inbox.read("a1") == []
    await bus.publish(chat("three"))
    assert texts(await inbox.read("a1")) == ["three"]
    assert await inbox.read("a1") == []


async def test_first_read_has_the_direct_mail_sent_before_but_not_old_broadcasts(
        redis: Redis, settings: Settings, bus: Bus) -> None:
    await bus.publish(chat("sent before a1 ever looked"))
    await bus.publish(chat("an old broadcast", to="@all"))
    assert texts(await Inbox(redis, settings).read("a1")) == ["sent before a1 ever looked"]


async def test_a_restarted_reader_resumes_where_the_last_one_stopped(settings: Settings, redis: Redis,
                                                                     bus: Bus) -> None:
    await bus.publish(chat("before the restart"))
    async with open_redis(settings) as first:
        assert texts(await Inbox(first, settings).read("a1")) == ["before the restart"]
    await bus.publish(chat("while no reader ran"))
    await bus.publish(chat("also while no reader ran", to="@all"))
    async with open_redis(settings) as second:
        inbox = Inbox(second, settings)
        assert texts(await inbox.read("a1")) == ["while no reader ran", "also while no reader ran"]
        assert await inbox.read("a1") == []


async def test_mail_fetched_but_never_acknowledged_comes_back_and_is_then_read_once(
        redis: Redis, settings: Settings, bus: Bus) -> None:
    await bus.publish(chat("one"))
    await bus.publish(chat("two"))
    async with open_redis(settings) as dying:
        mail = await Inbox(dying, settings).fetch("a1")  # killed before it showed them: no ack
        assert texts(mail.messages) == ["one", "two"]
    await bus.publish(chat("three"))
    inbox = Inbox(redis, settings)
    again = await inbox.fetch("a1")
    assert texts(again.messages) == ["one", "two"]  # first what the dead reader left pending
    await inbox.ack(again)
    assert texts(await inbox.read("a1")) == ["three"]
    assert await inbox.read("a1") == []


async def test_wait_blocks_until_the_first_message(redis: Redis, settings: Settings, bus: Bus) -> None:
    inbox = Inbox(redis, settings)
    await inbox.join("a1")

    async def send_later() -> None:
        await anyio.sleep(0.3)
        await bus.publish(message(StatusBody(text="chatter, not mail"), sender="a2"))  # does not end the wait
        await anyio.sleep(0.2)
        await bus.publish(chat("hello", to="@all"))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(send_later)
        got = await inbox.read("a1", wait_s=5)
    took = time.monotonic() - started
    assert texts(got) == ["hello"]
    assert 0.45 <= took < 3, took


async def test_wait_gives_up_after_the_time_with_no_mail(redis: Redis, settings: Settings) -> None:
    started = time.monotonic()
    assert await Inbox(redis, settings).read("a1", wait_s=0.4) == []
    assert 0.35 <= time.monotonic() - started < 2


async def test_undecodable_mail_is_dead_lettered_and_the_rest_read(redis: Redis, settings: Settings,
                                                                   bus: Bus) -> None:
    stream = bus.keys.inbox("a1")
    await redis.xadd(stream, {FIELD: b'{"kind": "chat"'})
    await bus.publish(chat("fine"))
    assert texts(await Inbox(redis, settings).read("a1")) == ["fine"]
    [dead] = await bus.dead_letters()
    assert (dead.stream, dead.group, dead.consumer, dead.reason) == (
        stream, "inbox-reader:a1", "reader", "invalid JSON: EOF while parsing an object at line 1 column 15")
    assert (await redis.xpending(stream, "inbox-reader:a1"))["pending"] == 0


def test_a_captains_round_reads_as_one_line_naming_every_task() -> None:
    body = AssignmentBody(task_id="t-3", token=2, task_kind="docs", title="Document it", state="running",
                          more=(AssignedTask(task_id="t-4", token=1, task_kind="audit"),))
    assert describe(message(body, sender="board", to="a1")) == (
        "the captain assigned you task t-3 (docs, token 2): Document it; task t-4 (audit, token 1); "
        "already running: no start needed")


async def test_the_reader_group_is_apart_from_the_agent_runtimes_group(redis: Redis, settings: Settings,
                                                                       bus: Bus) -> None:
    runtime = bus.consumer("a1", "instance-1", [bus.keys.inbox("a1")], start="0")
    await runtime.setup()
    await bus.publish(message(AssignmentBody(task_id="t-3", token=2, task_kind="docs", title="Document it"),
                              sender="board", to="a1"))
    [got] = await Inbox(redis, settings).read("a1")
    assert describe(got) == "the captain assigned you task t-3 (docs, token 2): Document it"
    assert as_dict(got)["body"] == {"task_id": "t-3", "token": 2, "task_kind": "docs", "title": "Document it"}
    assert len(await runtime.read(block_ms=1)) == 1  # the runtime still gets its assignment
