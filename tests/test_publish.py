"""What the publish script checks before it writes: who a message is from (under ACL users an agent
publishes only as itself, a captain as anyone) and each sender's publish rate (a token bucket per
sender, by the server's clock). Real users and a real server; the users are removed afterwards."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import cast

import anyio
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.cli import app
from swarm.discovery.engine import Discovery
from swarm.errors import BackendError, Forbidden, RateLimited
from swarm.identity import Identities
from swarm.keys import FIELD
from swarm.lua import Scripts
from swarm.metrics import Metrics
from swarm.progress import report_progress
from swarm.protocol import ChatBody, Message, StatusBody, decode, encode, message
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings
from tests.helpers import eventually
from tests.test_web_api import bearer, client_for, make_app


def said(text: str, sender: str = "a1", to: str = "@all") -> Message:
    return message(ChatBody(text=text), sender=sender, to=to)


def forbidden(sender: str) -> str:
    return (f"this Redis user may not publish as {sender}: an agent's user sends only as its own agent; send as "
            f"that agent, or connect as {sender} (`swarm acl add {sender}` makes its user) or as a captain")


def over(who: str, refused: int, total: int, retry_s: float, *, rate: str = "10", burst: int = 3) -> str:
    noun = "message" if total == 1 else "messages"
    return (f"{who} over the publish rate limit ({rate} messages/s per sender, burst {burst}): {refused} of {total} "
            f"{noun} refused; retry in {retry_s:g} s, or raise SWARM_PUBLISH_RATE and SWARM_PUBLISH_BURST "
            "(SWARM_PUBLISH_RATE=0: no limit)")


async def texts(redis: Redis, stream: str) -> list[tuple[str, str]]:
    """(sender, text) of every message in `stream`, oldest first."""
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))
    out = []
    for _, fields in rows:
        msg = decode(fields[FIELD.encode()])
        out.append((msg.sender, getattr(msg.body, "text", "")))
    return out


# --- who may send as whom ------------------------------------------------------------------------




async def test_an_agent_publishes_only_as_itself(users: dict[str, Redis], redis: Redis, settings: Settings) -> None:
    metrics = Metrics(settings, "alice")
    alice = Bus(users["alice"], settings, metrics)
    await alice.publish(said("mine", sender="alice"))
    await alice.publish_many([said("mine too", sender="alice", to="bob"), said("and this", sender="alice")])
    with pytest.raises(Forbidden) as exc:
        await alice.publish(said("forged", sender="bob"))
    assert str(exc.value) == forbidden("bob")
    # One forged message refuses its whole batch: nothing of it is written.
    with pytest.raises(Forbidden) as batch:
        await alice.publish_many([said("fine", sender="alice"), said("forged", sender="bob", to="cap"),
                                  said("also forged", sender="discovery")])
    assert str(batch.value) == forbidden("bob")
    keys = alice.keys
    assert await texts(redis, keys.bus) == [("alice", "mine"), ("alice", "and this")]
    assert await texts(redis, keys.inbox("bob")) == [("alice", "mine too")]
    assert await redis.exists(keys.inbox("cap")) == 0
    assert metrics.registry.get_sample_value(
        "swarm_messages_refused_total", {"reason": "forbidden", "swarm": settings.name, "process": "alice"}) == 4
    # Bob's own user may, of course; so may a captain's, as anyone (the discovery engine and the
    # captain run as one), and so may anyone in the trusted mode (the default user).
    await Bus(users["bob"], settings).publish(said("bob's", sender="bob"))
    cap = Bus(users["cap"], settings)
    await cap.publish(said("for alice", sender="alice"))
    await cap.publish_many([said("signal", sender="discovery", to="@captain"), said("hi", sender="captain")])
    await Bus(redis, settings).publish(said("trusted", sender="anyone"))
    assert await texts(redis, keys.bus) == [("alice", "mine"), ("alice", "and this"), ("bob", "bob's"),
                                            ("alice", "for alice"), ("captain", "hi"), ("anyone", "trusted")]
    assert await texts(redis, keys.captain) == [("discovery", "signal")]


async def test_an_agent_cannot_pass_a_sender_the_message_does_not_have(
    users: dict[str, Redis], redis: Redis, settings: Settings
) -> None:
    # A client of its own (another language) naming itself in ARGV while the JSON says bob: the
    # script reads an agent's messages' own `sender`, so the lie is refused.
    keys = Bus(redis, settings).keys
    forged = encode(said("forged", sender="bob"), settings.max_message_bytes)
    script = Scripts(users["alice"])["publish"]
    args: list[bytes | int | str] = [1000, keys.identity(""), 0, 1, 2, "alice", forged]
    with pytest.raises(BackendError) as exc:
        await script(keys=[keys.publish_rate, keys.bus], args=args)
    assert str(exc.value).endswith(forbidden("bob"))
    with pytest.raises(BackendError) as junk:
        await script(keys=[keys.publish_rate, keys.bus], args=[1000, keys.identity(""), 0, 1, 2, "alice", "[1]"])
    assert str(junk.value).endswith(
        "INVALID message 1 of the batch is not a JSON object with a string sender; send messages as "
        "protocols/PROTOCOL.md section 3 describes them")
    assert await redis.exists(keys.bus) == 0
    # The trusted mode takes the sender it is given: anyone may act as anyone there.
    await Scripts(redis)["publish"](keys=[keys.publish_rate, keys.bus], args=args)
    assert await texts(redis, keys.bus) == [("bob", "forged")]


async def test_swarm_send_as_an_agents_user_sends_as_that_agent(
    users: dict[str, Redis], redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    password = await Identities(redis, Bus(redis, settings).keys).rotate("alice")
    env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(tmp_path),
           "SWARM_USER": "alice", "SWARM_PASSWORD": password, "SWARM_AGENT": None, "SWARM_LOG_LEVEL": "warning"}

    async def swarm(*args: str) -> Result:
        return await anyio.to_thread.run_sync(partial(CliRunner().invoke, app, list(args), env=env))

    sent = await swarm("send", "bob", "hello")
    assert sent.exit_code == 0, sent.stderr
    refused = await swarm("send", "bob", "forged", "--from", "bob")
    assert (refused.exit_code, refused.stderr) == (1, f"error: {forbidden('bob')}\n")
    assert await texts(redis, Bus(redis, settings).keys.inbox("bob")) == [("alice", "hello")]


# --- the publish rate ------------------------------------------------------------------------------


@pytest.fixture
def limited(settings: Settings) -> Settings:
    """10 messages a second per sender, 3 at once."""
    return settings.model_copy(update={"publish_rate": 10.0, "publish_burst": 3})


async def test_a_sender_gets_its_burst_then_is_refused_with_when_to_retry(redis: Redis, limited: Settings) -> None:
    bus = Bus(redis, limited)
    for n in range(3):
        await bus.publish(said(f"{n}"))
    with pytest.raises(RateLimited) as exc:
        await bus.publish(said("one too many"))
    refusal = exc.value
    assert 0 < refusal.retry_after_s <= 0.1  # one token comes back every 100 ms
    assert str(refusal) == over("sender a1 is", 1, 1, refusal.retry_after_s)
    assert (refusal.ids, refusal.refused) == ([None], {"a1": 1})
    assert await texts(redis, bus.keys.bus) == [("a1", "0"), ("a1", "1"), ("a1", "2")]
    # The bucket is one field per sender in one hash, which expires once every bucket is full again.
    assert list(await redis.hgetall(bus.keys.publish_rate)) == [b"a1"]
    assert 0 < await redis.pttl(bus.keys.publish_rate) <= 3 * 100 + 1000


async def test_a_batch_over_the_limit_writes_what_fits_in_order_and_refuses_the_rest(
    redis: Redis, limited: Settings
) -> None:
    metrics = Metrics(limited, "p")
    bus = Bus(redis, limited, metrics)
    batch = [said("a 1"), said("b 1", sender="b1"), said("a 2"), said("a 3"), said("a 4"), said("b 2", sender="b1")]
    with pytest.raises(RateLimited) as exc:
        await bus.publish_many(batch)
    refusal = exc.value
    assert str(refusal) == over("sender a1 is", 1, 6, refusal.retry_after_s)
    assert refusal.refused == {"a1": 1}
    assert [i is None for i in refusal.ids] == [False, False, False, False, True, False]
    assert await texts(redis, bus.keys.bus) == [("a1", "a 1"), ("b1", "b 1"), ("a1", "a 2"), ("a1", "a 3"),
                                                ("b1", "b 2")]
    written = cast(list[tuple[bytes, object]], await redis.xrange(bus.keys.bus))
    assert [i for i in refusal.ids if i] == [e.decode() for e, _ in written]
    # Two senders over: both named, with how many each had refused.
    with pytest.raises(RateLimited) as both:
        await bus.publish_many([said("a 5"), said("b 3", sender="b1"), said("b 4", sender="b1"), said("a 6")])
    assert str(both.value) == over("senders a1 (2 refused), b1 (1 refused) are", 3, 4, both.value.retry_after_s)
    labels = {"swarm": limited.name, "process": "p"}
    assert metrics.registry.get_sample_value("swarm_messages_refused_total", {"reason": "rate_limited", **labels}) == 4
    assert metrics.registry.get_sample_value("swarm_messages_published_total", {"kind": "chat", **labels}) == 6


async def test_senders_have_buckets_of_their_own_that_refill_with_time(redis: Redis, limited: Settings) -> None:
    bus = Bus(redis, limited)
    await bus.publish_many([said(f"{n}") for n in range(3)])
    with pytest.raises(RateLimited):
        await bus.publish(said("refused"))
    await bus.publish_many([said(f"b{n}", sender="b1") for n in range(3)])  # another sender: a full bucket
    await anyio.sleep(0.25)  # 10 a second: two tokens back, not three
    await bus.publish_many([said("back 1"), said("back 2")])
    with pytest.raises(RateLimited):
        await bus.publish(said("refused again"))
    assert [t for s, t in await texts(redis, bus.keys.bus) if s == "a1"] == ["0", "1", "2", "back 1", "back 2"]


async def test_rate_0_is_no_limit(redis: Redis, settings: Settings) -> None:
    bus = Bus(redis, settings.model_copy(update={"publish_rate": 0, "publish_burst": 1}))
    await bus.publish_many([said(f"{n}") for n in range(2_500)])
    for n in range(20):
        await bus.publish(said(f"one {n}"))
    assert await redis.xlen(bus.keys.bus) == 2_520
    assert await redis.exists(bus.keys.publish_rate) == 0  # no bucket is kept


async def test_the_defaults_are_generous_and_settable(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().publish_rate, Settings().publish_burst) == (1_000.0, 2_000)
    monkeypatch.setenv("SWARM_PUBLISH_RATE", "0")
    monkeypatch.setenv("SWARM_PUBLISH_BURST", "50")
    assert (Settings().publish_rate, Settings().publish_burst) == (0.0, 50)


async def test_progress_over_the_limit_keeps_the_lease_and_drops_the_words(redis: Redis, limited: Settings) -> None:
    board, bus = Board(redis, limited, speak=False), Bus(redis, limited)
    await board.create(TaskSpec(kind="audit", title="one"))
    task = await board.claim_next("a1", ["audit"])
    assert task is not None
    await bus.publish_many([said(f"{n}") for n in range(3)])
    before = (await board.get(task.id)).lease_until
    await anyio.sleep(0.01)
    after = await report_progress(board, bus, task.id, task.token, "half way", agent="a1")
    assert after.lease_until > before
    assert ("a1", "half way") not in await texts(redis, bus.keys.bus)  # the status message was dropped


async def test_the_web_api_answers_a_sender_over_the_limit_with_429(redis: Redis, limited: Settings) -> None:
    settings = limited.model_copy(update={"publish_burst": 1})
    captain = bearer(settings, "captain")
    async with client_for(make_app(settings, redis)) as web:
        assert (await web.post("/api/messages", json={"to": "@all", "text": "one"}, headers=captain)).status_code == 201
        reply = await web.post("/api/messages", json={"to": "@all", "text": "two"}, headers=captain)
    body = reply.json()
    assert (reply.status_code, body["error"]) == (429, "rate_limited")
    assert body["message"].startswith("sender captain is over the publish rate limit (10 messages/s per sender, "
                                      "burst 1): 1 of 1 message refused; retry in ")


async def test_the_discovery_engine_over_the_limit_drops_its_signals_and_goes_on(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    slow = settings.model_copy(update={"publish_rate": 0.001, "publish_burst": 1})  # one, then one in 1,000 s
    await Registry(redis, slow).register(AgentCard(name="a1", capabilities=("review",)), "a1-i1")
    engine = Discovery(redis, slow, tmp_path)
    await engine.bus.publish(said("the one message the engine's sender may send", sender="discovery"))
    chatter = Bus(redis, settings.model_copy(update={"publish_rate": 0}))
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        for n in range(8):
            await chatter.publish(message(StatusBody(text=("standing by", "awaiting orders")[n % 2]), sender="a1"))
        await eventually(lambda: _true(engine.seen >= 8))
        tg.cancel_scope.cancel()
    assert engine.signals >= 1  # it fired, ran its sources, and went on reading
    assert await redis.xlen(engine.keys.captain) == 0  # neither the signal nor the escalation got through


async def _true(value: bool) -> bool:
    return value
