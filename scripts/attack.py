"""Attacks on a swarm in ACL mode, each tried for real; prints attack | refused? | how.

Starts its own embedded Valkey, makes the users `swarm acl add` makes (agents alice and mallory, a
captain, a viewer), locks the default user, and has mallory (and the viewer) try what an agent must
not be able to do. Run it:

    .venv/bin/python scripts/attack.py

Rows marked "not refused (known limit)" are the limit of Redis ACLs, stated in swarm/identity.py: a
script runs with its caller's permissions, so a user allowed to run the board scripts may also make
their raw writes. Agents you do not trust with that use the HTTP API (`swarm web`) instead of a Redis
user: the rows marked "web API" try the same attacks that way, and every one of them is refused.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.connection import client
from swarm.errors import SwarmError
from swarm.handlers.command import CommandHandler
from swarm.identity import Identities, new_password
from swarm.presence import Presence
from swarm.protocol import StatusBody, message
from swarm.registry import AgentCard, Registry
from swarm.server import EmbeddedServer
from swarm.settings import Settings
from swarm.web.app import create_app
from swarm.web.auth import Tokens, WebSettings

Attack = Callable[[], Awaitable[Any]]


async def attempt(rows: list[tuple[str, str, str]], what: str, attack: Attack, expect_refusal: bool = True) -> None:
    try:
        await attack()
    except SwarmError as exc:
        rows.append((what, "refused", f"{type(exc).__name__}: {str(exc)[:110]}"))
        return
    rows.append((what, "NOT refused" if expect_refusal else "not refused (known limit)",
                 "went through" if expect_refusal else "Redis ACLs apply inside scripts too: see swarm/identity.py"))


async def run(url: str, home: Path) -> list[tuple[str, str, str]]:
    admin_settings = Settings(redis_url=url, name="attack", home=home, connect_retries=0)
    admin = client(url, admin_settings)
    made = Identities(admin, Board(admin, admin_settings).keys)
    passwords = {name: await made.add(name, role) for name, role in
                 (("alice", "agent"), ("mallory", "agent"), ("cap", "captain"), ("eve", "viewer"))}

    def as_user(name: str) -> Redis:
        return client(url, admin_settings.model_copy(update={"user": name, "password": SecretStr(passwords[name])}))

    alice_r, mallory_r, cap_r, eve_r = (as_user(n) for n in ("alice", "mallory", "cap", "eve"))
    # Lock the default user: from here on, only the users above get in.
    await admin.execute_command("ACL", "SETUSER", "default", "on", f">{new_password()}")  # type: ignore[no-untyped-call]
    alice, mallory, cap, eve = (Board(r, admin_settings) for r in (alice_r, mallory_r, cap_r, eve_r))
    named = Board(alice_r, admin_settings).keys.connection("a-1")
    await Registry(alice_r, admin_settings).register(AgentCard(name="alice", capabilities=("audit",)), "a-1",
                                                     connection=named)
    await alice_r.client_setname(named)  # alice is alive: her named connection is open
    await cap.create(TaskSpec(kind="audit", title="alice's task"))
    task = await alice.claim_next("alice", ["audit"])
    assert task is not None
    token = task.token  # as if mallory read it (HGET ... token): the token alone must not be enough

    rows: list[tuple[str, str, str]] = []
    await attempt(rows, "complete alice's task with her token, as alice",
                  lambda: mallory.complete(task.id, token, "forged", agent="alice"))
    await attempt(rows, "complete alice's task with her token, as mallory",
                  lambda: mallory.complete(task.id, token, "forged", agent="mallory"))
    await attempt(rows, "fail alice's task", lambda: mallory.fail(task.id, token, "x", agent="alice"))
    await attempt(rows, "release alice's task", lambda: mallory.release(task.id, token, agent="alice"))
    await attempt(rows, "block alice's task", lambda: mallory.block(task.id, token, "x", agent="alice"))
    await attempt(rows, "renew alice's lease", lambda: mallory.renew("alice", [(task.id, token)]))
    await attempt(rows, "register over alice's card (register script)",
                  lambda: Registry(mallory_r, admin_settings).register(AgentCard(name="alice"), "m-1"))
    await attempt(rows, "assign a task (an agent)", lambda: mallory.assign(task.id, "mallory", force=True))
    await attempt(rows, "cancel a task (an agent)", lambda: mallory.cancel(task.id))
    await attempt(rows, "create a task (a viewer)", lambda: eve.create(TaskSpec(kind="audit", title="x")))
    await attempt(rows, "assign a task (a viewer)", lambda: eve.assign(task.id, "mallory", force=True))
    await attempt(rows, "write a board key directly (a viewer)",
                  lambda: eve_r.hset(eve.keys.task(task.id), "state", "done"))
    await attempt(rows, "run a shell command through a task title (cmd: template)", lambda: injection(home))
    await attempt(rows, "publish with alice as sender (the bus's publish script)",
                  lambda: Bus(mallory_r, admin_settings).publish(message(StatusBody(text="hi"), sender="alice")))
    await attempt(rows, "stop alice or get her reaped by a raw HSET over her card (an agent)",
                  lambda: card_overwrite(alice_r, mallory_r, cap_r, admin_settings))
    await attempt(rows, "write a board key directly (an agent with a Redis user)",
                  lambda: mallory_r.hset(mallory.keys.task(task.id), "result", "forged"), expect_refusal=False)
    await attempt(rows, "publish with alice as sender (raw XADD, an agent with a Redis user)",
                  lambda: mallory_r.xadd(mallory.keys.bus, {"m": message(StatusBody(text="hi"), sender="alice")
                                                            .model_dump_json()}), expect_refusal=False)
    await gateway(rows, url, cap_r, admin_settings, task.id, token)
    for r in (admin, alice_r, mallory_r, cap_r, eve_r):
        await r.aclose()
    return rows


async def card_overwrite(alice_r: Redis, mallory_r: Redis, cap_r: Redis, settings: Settings) -> None:
    """mallory overwrites alice's card (agents may write the agents hash): does alice stop, or get reaped?"""
    registry = Registry(alice_r, settings)
    card = await registry.card("alice")
    assert card is not None
    keys = Board(alice_r, settings).keys
    forged = card.model_copy(update={"instance": "m-2", "connection": keys.connection("m-2"), "concurrency": 99})
    await mallory_r.hset(keys.agents, "alice", forged.model_dump_json())
    reaped = await Presence(cap_r, settings, recheck_s=0.01).sweep(force=True)
    still_hers = await registry.heartbeat("alice", card.instance, card)
    if reaped or not still_hers or await registry.card("alice") != card:
        return  # it worked: not refused
    raise SwarmError("no effect: the holder of a name is read from its identity key, which only the agent or a "
                     "captain may write; her next heartbeat wrote her card back")


async def gateway(rows: list[tuple[str, str, str]], url: str, cap_r: Redis, settings: Settings,
                  task_id: str, token: int) -> None:
    """The same attacks from an agent that has no Redis user, only an agent token for `swarm web`
    (whose server holds the captain's credentials)."""
    secret = new_password()
    app = create_app(settings, web=WebSettings(secret=SecretStr(secret)), redis=cap_r)
    tokens = Tokens(secret.encode(), settings.name)
    mallory = {"Authorization": "Bearer " + tokens.issue("agent", "mallory")}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50_000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://board") as web:

        async def post(path: str, body: dict[str, Any]) -> None:
            reply = await web.post(path, json=body, headers=mallory)
            if reply.status_code < 400:
                return
            body = reply.json()
            raise SwarmError(f"HTTP {reply.status_code} {body['error']}: {body['message']}")

        await attempt(rows, "web API: complete alice's task with her token, as alice",
                      lambda: post(f"/api/agents/alice/tasks/{task_id}/done", {"token": token, "result": "forged"}))
        await attempt(rows, "web API: complete alice's task with her token, as mallory",
                      lambda: post(f"/api/agents/mallory/tasks/{task_id}/done", {"token": token, "result": "forged"}))
        await attempt(rows, "web API: register as alice",
                      lambda: post("/api/agents/alice/register", {"capabilities": ["audit"]}))
        await attempt(rows, "web API: send a message with alice as sender",
                      lambda: post("/api/messages", {"to": "@all", "text": "hi", "sender": "alice"}))
        await attempt(rows, "web API: write a board key directly (no Redis user to connect as)",
                      lambda: no_user(url, settings, task_id))


async def no_user(url: str, settings: Settings, task_id: str) -> None:
    anonymous = client(url, settings.model_copy(update={"connect_retries": 0}))
    try:
        await anonymous.hset(Board(anonymous, settings).keys.task(task_id), "result", "forged")
    finally:
        await anonymous.aclose()


async def injection(home: Path) -> None:
    handler = CommandHandler(f"sh -c 'echo {{title}} > {home}/out'")
    from swarm.board import Task  # noqa: PLC0415

    await handler(Task(id="t-9", kind="audit", title=f"x; touch {home}/PWNED", state="running", token=1), None)
    if (home / "PWNED").exists():
        return  # the shell ran it: not refused
    raise SwarmError("the title reached the shell quoted: one word of text, `touch` never ran")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="swarm-attack-") as tmp:
        home = Path(tmp)
        server = EmbeddedServer(home / "server")
        try:
            rows = anyio.run(run, server.ensure().url, home)
        finally:
            server.stop()
    width = max(len(r[0]) for r in rows)
    print(f"| {'attack':<{width}} | refused? | how |")
    print(f"| {'-' * width} | --- | --- |")
    for what, verdict, how in rows:
        print(f"| {what:<{width}} | {verdict} | {how} |")
    unexpected = [r for r in rows if r[1] == "NOT refused"]
    if unexpected:
        raise SystemExit(f"{len(unexpected)} attack(s) went through that must be refused")


if __name__ == "__main__":
    main()
