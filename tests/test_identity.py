"""Identities the server enforces: under ACL users an agent acts only for itself, a captain for
anyone, a viewer only reads. Real users on the real test server, removed afterwards."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.connection import client
from swarm.errors import AuthError, Forbidden
from swarm.identity import Identities, Identity, rules
from swarm.presence import Presence
from swarm.protocol import StatusBody, message
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings


def board(users: dict[str, Redis], name: str, settings: Settings) -> Board:
    return Board(users[name], settings)


async def test_an_agent_acts_only_for_itself_a_captain_for_anyone(
    users: dict[str, Redis], redis: Redis, settings: Settings
) -> None:
    alice, bob, cap = (board(users, n, settings) for n in ("alice", "bob", "cap"))
    await alice.create(TaskSpec(kind="audit", title="one"))
    await alice.create(TaskSpec(kind="audit", title="two"))
    mine = await alice.claim_next("alice", ["audit"])
    assert mine is not None
    with pytest.raises(Forbidden) as exc:
        await alice.claim_next("bob", ["audit"])
    assert str(exc.value) == ("this Redis user may not act as bob; connect as bob (`swarm acl add bob` makes its "
                              "user) or as a captain")
    theirs = await bob.claim_next("bob", ["audit"])
    assert theirs is not None
    # With bob's valid token, naming bob: still refused, it is not bob calling.
    for attempt in (alice.complete(theirs.id, theirs.token, "forged", agent="bob"),
                    alice.fail(theirs.id, theirs.token, "forged", agent="bob"),
                    alice.release(theirs.id, theirs.token, agent="bob"),
                    alice.block(theirs.id, theirs.token, "forged", agent="bob"),
                    alice.heartbeat(theirs.id, theirs.token, agent="bob")):
        with pytest.raises(Forbidden):
            await attempt
    with pytest.raises(Forbidden):
        await alice.renew("bob", [(theirs.id, theirs.token)])
    with pytest.raises(Forbidden):
        await alice.settle("bob", [(theirs.id, theirs.token, "forged")])
    with pytest.raises(Forbidden) as captain_only:
        await alice.assign(theirs.id, "alice", force=True)
    assert str(captain_only.value) == ("only a captain may do this; connect as a user made with `swarm acl add NAME "
                                       "--role captain`")
    with pytest.raises(Forbidden):
        await alice.cancel(theirs.id)
    with pytest.raises(Forbidden):
        await Registry(users["alice"], settings).register(AgentCard(name="bob", capabilities=("audit",)), "x")
    assert (await Board(redis, settings).get(theirs.id)).state == "running"  # nothing moved
    # Its own work goes through; a captain acts for anyone.
    assert (await alice.complete(mine.id, mine.token, "done", agent="alice")).state == "done"
    await Registry(users["alice"], settings).register(AgentCard(name="alice", capabilities=("audit",)), "a-1")
    moved = await cap.assign(theirs.id, "alice", force=True)
    assert moved.owner == "alice"


async def test_a_viewer_only_reads(users: dict[str, Redis], settings: Settings) -> None:
    await board(users, "cap", settings).create(TaskSpec(kind="audit", title="one"))
    eve = board(users, "eve", settings)
    assert [t.title for t in await eve.tasks()] == ["one"]
    with pytest.raises(AuthError) as exc:
        await eve.create(TaskSpec(kind="audit", title="two"))
    assert "has no permissions to run the 'evalsha' command" in str(exc.value)
    with pytest.raises(AuthError):
        await users["eve"].hset(eve.keys.task("t-1"), "state", "done")  # no raw writes either
    assert (await eve.get("t-1")).state == "open"


async def test_acl_list_rotate_and_remove(users: dict[str, Redis], redis: Redis, settings: Settings) -> None:
    made = Identities(redis, Board(redis, settings).keys)
    assert await made.all() == [Identity("alice", "agent", True), Identity("bob", "agent", True),
                                Identity("cap", "captain", True), Identity("eve", "viewer", True)]
    new = await made.rotate("alice")
    await users["alice"].connection_pool.disconnect()  # reconnecting with the old password fails
    with pytest.raises(AuthError):
        await users["alice"].ping()
    fresh = client(settings.redis_url or "", settings.model_copy(update={"user": "alice", "password": SecretStr(new)}))
    try:
        assert await fresh.ping()
    finally:
        await fresh.aclose()
    await made.remove("bob")
    assert [i.name for i in await made.all()] == ["alice", "cap", "eve"]


async def test_a_raw_write_over_an_agents_card_neither_stops_it_nor_gets_it_reaped(
    users: dict[str, Redis], redis: Redis, settings: Settings
) -> None:
    """Agents may write the agents hash, so bob can overwrite alice's card; who holds the name comes
    from alice's identity key, which only she (or a captain) may write."""
    keys = Board(redis, settings).keys
    alice = Registry(users["alice"], settings)
    card = await alice.register(AgentCard(name="alice", capabilities=("audit",)), "a-1",
                                connection=keys.connection("a-1"))
    await users["alice"].client_setname(keys.connection("a-1"))  # its connection is open, named
    with capture_logs() as logs:
        assert await alice.heartbeat("alice", "a-1", card)
    assert logs == []  # its own card, untouched: nothing to write back
    await Board(users["cap"], settings).create(TaskSpec(kind="audit", title="one"))
    assert await Board(users["alice"], settings).claim_next("alice", ["audit"]) is not None
    forged = card.model_copy(update={"instance": "b-1", "connection": keys.connection("gone"), "concurrency": 99})
    await users["bob"].hset(keys.agents, "alice", forged.model_dump_json())
    with pytest.raises(AuthError):
        await users["bob"].set(keys.identity("alice"), '{"instance": "b-1"}')  # the holder is hers alone
    assert await Presence(users["cap"], settings, recheck_s=0.01).sweep(force=True) == []
    assert await Board(redis, settings).owned("alice") == {"t-1"}
    assert await alice.heartbeat("alice", "a-1", card)  # still hers; the card is written back
    assert await alice.card("alice") == card
    assert not await alice.heartbeat("alice", "b-1")


async def test_refresh_gives_an_older_user_this_versions_rules_and_keeps_its_password(
    redis: Redis, settings: Settings
) -> None:
    keys = Board(redis, settings).keys
    made = Identities(redis, keys)
    # alice as an earlier version made her: no access to the publish buckets, write-only identity key.
    old = [r.replace(f"~{keys.identity('alice')}", f"%W~{keys.identity('alice')}")
           for r in rules(keys, "alice", "agent", [">old-password"]) if r != f"~{keys.publish_rate}"]
    await redis.execute_command("ACL", "SETUSER", "alice", *old)  # type: ignore[no-untyped-call]
    alice = client(settings.redis_url or "", settings.model_copy(
        update={"user": "alice", "password": SecretStr("old-password"), "connect_retries": 0}))
    try:
        with pytest.raises(AuthError):
            await Bus(alice, settings).publish(message(StatusBody(text="hi"), sender="alice"))
        assert await made.refresh("alice") == Identity("alice", "agent", True)
        await alice.connection_pool.disconnect()  # the same password still gets in
        assert await Bus(alice, settings).publish(message(StatusBody(text="hi"), sender="alice"))
    finally:
        await alice.aclose()
        await made.remove("alice")
