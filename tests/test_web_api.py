"""`swarm web`'s HTTP API against the real test server: reads, captain actions, the agent API,
tokens and roles, and the refusals (401, 403, 404, 409, 422) with nothing half-done behind them.

Most tests drive the ASGI app in-process (httpx's ASGITransport, lifespan run by hand); the live
feed and the CLI run a real server, since server-sent events need a real connection.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from typer.testing import CliRunner

from swarm.board import Board, TaskSpec
from swarm.cli import app as cli
from swarm.errors import ConfigError, Unauthorized
from swarm.keys import Keys
from swarm.protocol import Message, decode
from swarm.settings import Settings
from swarm.web.access import READ_REFUSED, WRITE_REFUSED
from swarm.web.app import create_app
from swarm.web.auth import KEY_FILE, Tokens, WebSettings, parse_ttl
from swarm.web.query import Filters, Reader
from tests.helpers import eventually

SECRET = "test-secret-" + "x" * 40
ISSUE = "`swarm web token --role ROLE` on the machine that serves the board issues one"
ROOT = Path(__file__).resolve().parent.parent


def make_app(settings: Settings, redis: Redis, *, open_read: bool = False) -> FastAPI:
    return create_app(settings, open_read=open_read, web=WebSettings(secret=SECRET, max_body_bytes=4096), redis=redis)


@asynccontextmanager
async def client_for(app: FastAPI, host: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, its lifespan (Redis, the event hub) running around the client."""
    transport = httpx.ASGITransport(app=app, client=(host, 50_000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://board") as c:
        yield c


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port, in this event loop; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=1))

    async def started() -> bool:
        return server.started

    with socket.create_server(("127.0.0.1", 0)) as sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            await eventually(started, within=10)
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True


def bearer(settings: Settings, role: str, agent: str | None = None) -> dict[str, str]:
    return {"Authorization": "Bearer " + Tokens(SECRET.encode(), settings.name).issue(role, agent)}


@pytest.fixture
async def web(redis: Redis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app(settings, redis)) as client:
        yield client


@pytest.fixture
def captain(settings: Settings) -> dict[str, str]:
    return bearer(settings, "captain")


@pytest.fixture
def viewer(settings: Settings) -> dict[str, str]:
    return bearer(settings, "viewer")


def refused(reply: httpx.Response) -> tuple[int, str, str]:
    body = reply.json()
    return reply.status_code, body["error"], body["message"]


async def stream(redis: Redis, key: str) -> list[Message]:
    """Every message in a stream, oldest first."""
    return [decode(fields[b"m"]) for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(key))]


async def events(redis: Redis, settings: Settings) -> int:
    return int(await redis.xlen(Keys(settings.name).events))


# --- reading -------------------------------------------------------------------------------------
async def test_board_pages_newest_first_under_filters(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                                      viewer: dict[str, str]) -> None:
    board = Board(redis, settings)
    for n in range(7):
        await board.create(TaskSpec(kind="docs" if n % 2 else "audit", title=f"Task number {n}"))
    claimed = await board.claim_next("agent-1", ["audit"])
    assert claimed is not None
    assert claimed.id == "t-1"

    page = (await web.get("/api/board", params={"limit": 3}, headers=viewer)).json()
    assert [t["id"] for t in page["tasks"]] == ["t-7", "t-6", "t-5"]
    assert (page["total"], page["offset"], page["limit"]) == (7, 0, 3)
    assert page["counts"] == {"open": 6, "assigned": 0, "running": 1, "blocked": 0, "done": 0, "failed": 0,
                              "cancelled": 0}
    later = (await web.get("/api/board", params={"limit": 3, "offset": 6}, headers=viewer)).json()
    assert [t["id"] for t in later["tasks"]] == ["t-1"]

    async def ids(**params: Any) -> tuple[list[str], int]:
        found = (await web.get("/api/board", params=params, headers=viewer)).json()
        return [t["id"] for t in found["tasks"]], found["total"]

    assert await ids(state="open", limit=2) == (["t-7", "t-6"], 6)
    assert await ids(kind="docs") == (["t-6", "t-4", "t-2"], 3)
    assert await ids(owner="agent-1") == (["t-1"], 1)
    assert await ids(q="NUMBER 3") == (["t-4"], 1)
    assert await ids(q="t-5") == (["t-5"], 1)
    assert await ids(kind="audit", state="open", offset=1, limit=1) == (["t-5"], 3)
    sorting, scanning = Reader(redis, settings), Reader(redis, settings)
    scanning.sort = False  # as where the server refuses SORT_RO ... GET: the same pages, read another way
    for state, kind, owner, text in ((None, "docs", None, None), ("open", None, None, "number"),
                                     (None, None, "agent-1", None)):
        filters = Filters(state, kind, owner, text)
        assert await scanning.page(filters, 0, 50) == await sorting.page(filters, 0, 50)
    assert sorting.sort  # the test server (Valkey) answered SORT_RO


async def test_task_page_has_its_whole_history(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                               viewer: dict[str, str]) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="Document the bus"))
    task = await board.claim_next("agent-1", ["docs"])
    assert task is not None
    await board.complete(task.id, task.token, "drafted", agent="agent-1")
    reply = (await web.get("/api/tasks/t-1", headers=viewer)).json()
    assert reply["task"]["state"] == "done"
    assert reply["task"]["result"] == "drafted"
    assert [(e["event"], e["state"], e["owner"], e["detail"]) for e in reply["history"]] == [
        ("created", "open", None, "Document the bus"), ("claimed", "running", "agent-1", ""),
        ("done", "done", "agent-1", "drafted")]


async def test_an_unknown_task_or_route_is_404(web: httpx.AsyncClient, viewer: dict[str, str],
                                               captain: dict[str, str]) -> None:
    message = "no task t-404 on this board; `swarm task list` shows the ids"
    assert refused(await web.get("/api/tasks/t-404", headers=viewer)) == (404, "not_found", message)
    assert refused(await web.post("/api/tasks/t-404/cancel", json={}, headers=captain)) == (404, "not_found", message)
    assert refused(await web.get("/api/nothing", headers=viewer)) == (
        404, "not_found", "no route GET /api/nothing; the API is described at /docs")


async def test_agents_signals_dead_letters_and_health(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                                      viewer: dict[str, str], captain: dict[str, str]) -> None:
    agent = bearer(settings, "agent", "worker-1")
    joined = (await web.post("/api/agents/worker-1/register", json={"capabilities": ["docs"], "concurrency": 2},
                             headers=agent)).json()
    await Board(redis, settings).create(TaskSpec(kind="docs", title="Write the README"))
    await web.post("/api/agents/worker-1/claim", json={"caps": ["docs"]}, headers=agent)
    listed = (await web.get("/api/agents", headers=viewer)).json()["agents"]
    assert [(a["name"], a["liveness"], a["load"], a["concurrency"], a["tasks"]) for a in listed] == [
        ("worker-1", "alive", 1, 2, ["t-1"])]
    assert (joined["name"], joined["moved"]) == ("worker-1", [])
    assert (await web.get("/api/signals", headers=viewer)).json()["signals"] == []
    await redis.xadd(Keys(settings.name).dlq, {"stream": "bus", "entry": "1-0", "group": "g", "consumer": "c",
                                               "reason": "invalid JSON", "at": "1", "raw": b"{nope"})
    letters = (await web.get("/api/dead-letters", headers=viewer)).json()["dead_letters"]
    assert [(d["reason"], d["raw"]) for d in letters] == [("invalid JSON", "{nope")]
    health = (await web.get("/api/health", headers=viewer)).json()
    assert [(c["name"], c["status"]) for c in health["checks"]] == [
        ("server", "ok"), ("captain", "fail"), ("agents", "ok"), ("lag", "ok"), ("dead_letters", "warn"),
        ("leases", "ok")]
    assert health["healthy"] is False


async def test_healthz_docs_and_openapi_need_no_token(web: httpx.AsyncClient, settings: Settings) -> None:
    health = await web.get("/healthz")
    assert (health.status_code, health.json()) == (
        200, {"status": "ok", "swarm": settings.name, "redis": "ok", "events": "following"})
    docs = await web.get("/docs")
    assert docs.status_code == 200
    assert "<code>/api/agents/{agent}/claim</code>" in docs.text
    assert not re.search(r"(src|href)=['\"]https?:", docs.text)  # nothing from outside this machine
    spec = (await web.get("/openapi.json")).json()
    assert {"/api/board", "/api/tasks", "/api/tasks/{task_id}/retry", "/api/agents/{agent}/tasks/{task_id}/done",
            "/api/agents/{agent}/inbox", "/api/messages", "/healthz"} <= set(spec["paths"])
    assert "429" in spec["paths"]["/api/messages"]["post"]["responses"]  # a sender over its publish rate
    assert "429" not in spec["paths"]["/api/board"]["get"]["responses"]
    page = await web.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/board.js" defer></script>' in page.text
    assert (await web.get("/static/board.js")).headers["content-type"] == "text/javascript; charset=utf-8"


# --- tokens and roles ----------------------------------------------------------------------------
async def test_reading_needs_a_token_unless_open_read_from_this_machine(
    web: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    reply = await web.get("/api/board")
    assert refused(reply) == (401, "unauthorized", READ_REFUSED)
    assert reply.headers["www-authenticate"] == "Bearer"
    app = make_app(settings, redis, open_read=True)
    async with client_for(app) as local:
        assert (await local.get("/api/board")).status_code == 200
        assert (await local.get("/api/me")).json() == {"role": None, "name": None, "expires": None}
        create = await local.post("/api/tasks", json={"kind": "docs", "title": "x"})
        assert refused(create) == (401, "unauthorized", WRITE_REFUSED)
    async with client_for(app, host="192.0.2.7") as remote:
        assert refused(await remote.get("/api/board")) == (401, "unauthorized", READ_REFUSED)
    assert await Board(redis, settings).counts() == dict.fromkeys(("open", "assigned", "running", "blocked", "done",
                                                                   "failed", "cancelled"), 0)


async def test_bad_tokens_are_401(web: httpx.AsyncClient, settings: Settings) -> None:
    now = int(time.time())
    claims = {"sub": "captain", "role": "captain", "aud": f"swarm:{settings.name}", "iat": now - 7200,
              "exp": now - 3600}
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - 3600))
    other_swarm = jwt.encode({**claims, "aud": "swarm:elsewhere", "exp": now + 60}, SECRET, algorithm="HS256")
    forged = jwt.encode({**claims, "exp": now + 60}, "another-secret-" + "y" * 40, algorithm="HS256")
    cases = {
        f"Bearer {expired}": f"the token expired at {at} UTC; {ISSUE}",
        f"Bearer {other_swarm}": f"the token is for another swarm, not swarm:{settings.name}; {ISSUE}",
        f"Bearer {forged}": f"the token is not signed with this board's secret; {ISSUE}",
        "Bearer not-a-jwt": f"the bearer token is not a JWT; {ISSUE}",
        "Basic dXNlcjpwYXNz": f"the Authorization header must be `Bearer <token>`; {ISSUE}",
    }
    for header, message in cases.items():
        assert refused(await web.get("/api/board", headers={"Authorization": header})) == (
            401, "unauthorized", message), header


async def test_a_token_of_the_wrong_role_or_agent_is_403(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                                         viewer: dict[str, str], captain: dict[str, str]) -> None:
    worker = bearer(settings, "agent", "worker-1")
    spec = {"kind": "docs", "title": "Write it"}
    cases = [
        (web.post("/api/tasks", json=spec, headers=viewer),
         "a viewer token cannot create tasks: that needs a captain token (`swarm web token --role captain`)"),
        (web.post("/api/tasks", json=spec, headers=worker),
         "an agent token cannot create tasks: that needs a captain token (`swarm web token --role captain`)"),
        (web.post("/api/agents/worker-2/claim", json={"caps": ["docs"]}, headers=worker),
         "this token acts as agent worker-1, not worker-2"),
        (web.post("/api/agents/worker-1/claim", json={"caps": ["docs"]}, headers=captain),
         "a captain token cannot act as agent worker-1: that needs its agent token "
         "(`swarm web token --role agent --agent worker-1`)"),
        (web.get("/api/agents/worker-2/inbox", headers=worker), "this token acts as agent worker-1, not worker-2"),
        (web.post("/api/messages", json={"to": "@all", "text": "hi"}, headers=viewer),
         "a viewer token cannot send messages: that needs a captain token (`swarm web token --role captain`)"),
    ]
    for call, message in cases:
        assert refused(await call) == (403, "forbidden", message)
    assert await events(redis, settings) == 0
    assert await redis.xlen(Keys(settings.name).bus) == 0


def test_tokens_issue_and_parse_ttl(settings: Settings) -> None:
    tokens = Tokens(SECRET.encode(), settings.name)
    who = tokens.verify(tokens.issue("agent", "worker-1", parse_ttl("2h")))
    assert (who.role, who.name) == ("agent", "worker-1")
    assert who.expires - time.time() == pytest.approx(7200, abs=5)
    assert [parse_ttl(v) for v in ("90", "90s", "30m", "12h", "1d", "2w", "1.5h")] == [
        90, 90, 1800, 43200, 86400, 1209600, 5400]
    for bad in ("0", "soon", "-1d", "400d"):
        with pytest.raises(ConfigError) as exc:
            parse_ttl(bad)
        assert str(exc.value) == (f"--ttl {bad!r} is not a duration from 1s to 366d: use a number with s, m, h, d "
                                  "or w (for example 1d or 12h)")
    with pytest.raises(ConfigError, match=r"^--agent is missing: an agent token acts as one agent"):
        tokens.issue("agent")
    with pytest.raises(ConfigError, match=r"^--agent is only for agent tokens; a viewer token acts for no agent$"):
        tokens.issue("viewer", "worker-1")
    with pytest.raises(ConfigError, match=r"^--role 'admin' is not a role; use one of: captain, agent, viewer$"):
        tokens.issue("admin")
    with pytest.raises(Unauthorized, match="not signed with this board's secret"):
        Tokens(b"z" * 40, settings.name).verify(tokens.issue("viewer"))


def test_the_secret_file_is_made_0600_and_kept(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARM_WEB_SECRET", raising=False)
    first = Tokens.load(settings)
    path = settings.home / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert Tokens.load(settings).verify(first.issue("viewer")).role == "viewer"  # the same secret, reused
    path.chmod(0o644)
    with pytest.raises(ConfigError) as exc:
        Tokens.load(settings)
    assert str(exc.value) == (f"{path} is readable by other users (mode 0644), and anyone who reads it can sign "
                              f"tokens: `chmod 600 {path}`, then issue new tokens")
    with pytest.raises(ConfigError) as short:
        Tokens.load(settings, WebSettings(secret="too-short"))
    assert str(short.value).startswith("SWARM_WEB_SECRET is 9 bytes; it needs at least 32")


# --- the captain ---------------------------------------------------------------------------------
async def test_captain_creates_assigns_cancels_and_retries(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                                           captain: dict[str, str]) -> None:
    spec = {"kind": "audit", "title": "Audit auth", "priority": 7, "key": "audit:auth", "files": ["src/auth.py"]}
    made = await web.post("/api/tasks", json=spec, headers=captain)
    assert made.status_code == 201
    assert (made.json()["created"], made.json()["task"]["id"], made.json()["task"]["priority"]) == (True, "t-1", 7)
    again = await web.post("/api/tasks", json=spec, headers=captain)
    assert (again.status_code, again.json()["created"], again.json()["task"]["id"]) == (200, False, "t-1")

    assigned = (await web.post("/api/tasks/t-1/assign", json={"agent": "worker-1"}, headers=captain)).json()["task"]
    assert (assigned["state"], assigned["owner"], assigned["token"]) == ("assigned", "worker-1", 1)
    twice = await web.post("/api/tasks/t-1/assign", json={"agent": "worker-2"}, headers=captain)
    assert refused(twice) == (409, "illegal", "task t-1 is assigned by worker-1, not open; use reassign to move it")
    moved = (await web.post("/api/tasks/t-1/assign", json={"agent": "worker-2", "force": True},
                            headers=captain)).json()["task"]
    assert (moved["owner"], moved["token"]) == ("worker-2", 2)

    early = await web.post("/api/tasks/t-1/retry", headers=captain)
    assert refused(early) == (409, "illegal", "task t-1 is assigned; only a failed or cancelled task can be retried")
    cancelled = (await web.post("/api/tasks/t-1/cancel", json={"reason": "wrong module"}, headers=captain)).json()
    assert (cancelled["task"]["state"], cancelled["task"]["reason"]) == ("cancelled", "wrong module")

    retried = await web.post("/api/tasks/t-1/retry", json={"note": "right module now"}, headers=captain)
    task = retried.json()["task"]
    assert (retried.status_code, task["id"], task["state"], task["attempts"], task["owner"]) == (
        200, "t-1", "open", 0, None)
    second = await web.post("/api/tasks/t-1/retry", headers=captain)
    assert refused(second) == (409, "illegal", "task t-1 is open; only a failed or cancelled task can be retried")

    edited = await web.patch("/api/tasks/t-1", json={"priority": 9, "title": "Audit auth again"}, headers=captain)
    assert (edited.json()["task"]["priority"], edited.json()["task"]["title"]) == (9, "Audit auth again")
    assert refused(await web.patch("/api/tasks/t-1", json={}, headers=captain)) == (
        422, "invalid", "nothing to edit: give priority, title, body or caps")
    history = [e.body.event for e in await Board(redis, settings).history("t-1")]
    assert history == ["created", "assigned", "reassigned", "cancelled", "retried", "edited"]
    await Board(redis, settings).claim_next("worker-1", ["audit"])
    running = await web.patch("/api/tasks/t-1", json={"priority": 1}, headers=captain)
    assert refused(running) == (409, "illegal", "task t-1 is running; edit a task before it runs (or cancel it)")
    assert (await Board(redis, settings).get("t-1")).priority == 9


# --- agents without Redis access -------------------------------------------------------------------
async def test_an_agent_works_a_task_over_http(web: httpx.AsyncClient, redis: Redis, settings: Settings) -> None:
    me = bearer(settings, "agent", "worker-1")
    base = "/api/agents/worker-1"
    instance = (await web.post(f"{base}/register", json={"capabilities": ["docs"]}, headers=me)).json()["instance"]
    assert (await web.post(f"{base}/claim", json={"caps": ["docs"]}, headers=me)).json()["task"] is None
    await Board(redis, settings).create(TaskSpec(kind="docs", title="Document swarm.bus"))
    task = (await web.post(f"{base}/claim", headers=me)).json()["task"]  # with the capabilities it registered
    assert (task["id"], task["state"], task["owner"], task["token"]) == ("t-1", "running", "worker-1", 1)

    beat = (await web.post(f"{base}/heartbeat", json={"instance": instance, "tasks": [{"id": "t-1", "token": 1},
                                                                                       {"id": "t-1", "token": 9}]},
                           headers=me)).json()
    assert [(r["id"], r["ok"], r["error"]) for r in beat["results"]] == [
        ("t-1", True, None), ("t-1", False, "stale_token")]
    gone = await web.post(f"{base}/heartbeat", json={"instance": "01OLD"}, headers=me)
    assert refused(gone) == (409, "illegal", "agent worker-1 is not registered as instance 01OLD (a newer instance "
                                              "took the name, or it never registered): stop, or register again")

    said = await web.post(f"{base}/tasks/t-1/progress", json={"token": 1, "text": "half the docstrings"}, headers=me)
    assert said.status_code == 200
    status = await stream(redis, Keys(settings.name).bus)
    assert [(m.sender, m.kind, m.body.model_dump(exclude_none=True)) for m in status][-1] == (
        "worker-1", "status", {"text": "half the docstrings", "state": "working", "task_id": "t-1"})

    stale = await web.post(f"{base}/tasks/t-1/done", json={"token": 7, "result": "late"}, headers=me)
    assert refused(stale) == (409, "stale_token", "token 7 for task t-1 was never issued: use the token your claim "
                                                  "or assignment gave you")
    done = (await web.post(f"{base}/tasks/t-1/done", json={"token": 1, "result": "drafted"}, headers=me)).json()
    assert (done["task"]["state"], done["task"]["result"]) == ("done", "drafted")
    again = await web.post(f"{base}/tasks/t-1/done", json={"token": 1}, headers=me)
    assert refused(again) == (409, "illegal", "task t-1 is done; only an assigned or running task can do that")


async def test_fail_start_and_someone_elses_task(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                                                 captain: dict[str, str]) -> None:
    me, other = bearer(settings, "agent", "worker-1"), bearer(settings, "agent", "worker-2")
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="One"))
    await web.post("/api/tasks/t-1/assign", json={"agent": "worker-1"}, headers=captain)
    theirs = await web.post("/api/agents/worker-2/tasks/t-1/start", json={"token": 1}, headers=other)
    assert refused(theirs) == (409, "illegal", "task t-1 is owned by worker-1, not worker-2")
    started = (await web.post("/api/agents/worker-1/tasks/t-1/start", json={"token": 1}, headers=me)).json()["task"]
    assert started["state"] == "running"
    failed = (await web.post("/api/agents/worker-1/tasks/t-1/fail", json={"token": 1, "reason": "tool crashed"},
                             headers=me)).json()["task"]
    assert (failed["state"], failed["token"], failed["reason"]) == ("open", 2, "tool crashed")
    late = await web.post("/api/agents/worker-1/tasks/t-1/done", json={"token": 1, "result": "late"}, headers=me)
    assert refused(late) == (409, "stale_token", "token 1 for task t-1 is stale: the task moved on since (it is "
                                                 "open now); drop it")
    await board.create(TaskSpec(kind="docs", title="Two", priority=9))
    unnamed = await web.post("/api/agents/worker-1/claim", headers=me)
    assert refused(unnamed) == (422, "invalid", 'name the capabilities to claim with ({"caps": ["docs"]}, or ["*"] '
                                                "for any task), or register worker-1 with them first")
    claimed = (await web.post("/api/agents/worker-1/claim", json={"caps": ["*"]}, headers=me)).json()["task"]
    final = (await web.post("/api/agents/worker-1/tasks/t-2/fail",
                            json={"token": claimed["token"], "reason": "cannot", "retry": False}, headers=me)).json()
    assert final["task"]["state"] == "failed"


async def test_inbox_and_send(web: httpx.AsyncClient, redis: Redis, settings: Settings,
                              captain: dict[str, str]) -> None:
    me = bearer(settings, "agent", "worker-1")
    await web.post("/api/agents/worker-1/register", json={"capabilities": ["docs"]}, headers=me)
    assert (await web.get("/api/agents/worker-1/inbox", headers=me)).json() == {"messages": []}
    await Board(redis, settings).create(TaskSpec(kind="docs", title="One"))
    await web.post("/api/tasks/t-1/assign", json={"agent": "worker-1"}, headers=captain)
    sent = await web.post("/api/messages", json={"to": "worker-1", "text": "look at t-1", "urgent": True},
                          headers=captain)
    assert sent.status_code == 201
    inbox = (await web.get("/api/agents/worker-1/inbox", params={"wait_s": 1}, headers=me)).json()["messages"]
    assert [(m["kind"], m["sender"]) for m in inbox] == [("assignment", "board"), ("chat", "captain")]
    assert (inbox[0]["body"]["task_id"], inbox[0]["body"]["token"]) == ("t-1", 1)
    assert (inbox[1]["body"], inbox[1]["text"], inbox[1]["priority"]) == ({"text": "look at t-1"}, "look at t-1",
                                                                           "urgent")
    assert (await web.get("/api/agents/worker-1/inbox", headers=me)).json() == {"messages": []}  # handed out once

    reply = await web.post("/api/messages", json={"to": "@captain", "text": "blocked on creds"}, headers=me)
    msg = (await stream(redis, Keys(settings.name).captain))[-1]
    assert (msg.id, msg.sender, msg.kind) == (reply.json()["id"], "worker-1", "chat")


# --- bad input ----------------------------------------------------------------------------------
async def test_malformed_or_oversize_json_is_422_and_changes_nothing(
    web: httpx.AsyncClient, redis: Redis, settings: Settings, captain: dict[str, str]
) -> None:
    json_headers = {**captain, "Content-Type": "application/json"}
    me = bearer(settings, "agent", "worker-1")
    cases = [
        (web.post("/api/tasks", content=b'{"kind": "docs", "title": ', headers=json_headers),
         "the request body is not valid JSON (Expecting value at character 26)"),
        (web.post("/api/tasks", content=json.dumps({"kind": "docs", "title": "x" * 5000}), headers=json_headers),
         "the request body is 5029 bytes, over the 4096-byte limit (SWARM_WEB_MAX_BODY_BYTES); send large results "
         "by reference"),
        (web.post("/api/tasks", json={"kind": "docs", "title": "t", "priority": 12}, headers=captain),
         "body priority: Input should be less than or equal to 9 (got 12)"),
        (web.post("/api/tasks", json={"kind": "docs", "title": "t", "colour": "red"}, headers=captain),
         "body colour: Extra inputs are not permitted (got 'red')"),
        (web.post("/api/tasks", json={"kind": "Docs!", "title": "t"}, headers=captain),
         "body kind: String should match pattern '^[a-z][a-z0-9_-]{0,31}$' (got 'Docs!')"),
        (web.post("/api/tasks", headers=captain), "the request needs a JSON body"),
        (web.post("/api/tasks", json=["docs"], headers=captain),
         "body: Input should be a valid dictionary or object to extract fields from"),
        (web.post("/api/tasks/t 1/cancel", json={}, headers=captain),
         "path task_id: String should match pattern '^[\\x21-\\x7e]{1,128}$' (got 't 1')"),
        (web.get("/api/board", params={"limit": 0}, headers=captain),
         "query limit: Input should be greater than or equal to 1 (got '0')"),
        (web.post("/api/agents/worker-1/tasks/t-1/done", json={"token": "seven"}, headers=me),
         "body token: Input should be a valid integer, unable to parse string as an integer (got 'seven')"),
        (web.post("/api/messages", json={"to": "nobody here", "text": "hi"}, headers=me),
         "body to: String should match pattern '^(@all|@captain|@role:[A-Za-z0-9_.-]{1,64}|[A-Za-z0-9_.-]{1,64})$' "
         "(got 'nobody here')"),
    ]
    for call, message in cases:
        assert refused(await call) == (422, "invalid", message)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it is read
        yield b'{"kind": "docs", "title": "'
        yield b"x" * 5000
        yield b'"}'

    streamed = await web.post("/api/tasks", content=chunks(), headers=json_headers)
    assert refused(streamed) == (422, "invalid", "the request body is over the 4096-byte limit "
                                                 "(SWARM_WEB_MAX_BODY_BYTES); send large results by reference")
    assert await events(redis, settings) == 0
    assert await redis.xlen(Keys(settings.name).bus) == 0


# --- live, and the command -----------------------------------------------------------------------
async def test_board_events_arrive_as_server_sent_events(redis: Redis, settings: Settings) -> None:
    app = make_app(settings, redis)
    async with running(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(settings, "viewer")) as client:
        async with client.stream("GET", "/api/events") as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
            lines = feed.aiter_lines()
            with anyio.fail_after(10):
                assert await anext(lines) == "retry: 2000"
                assert await anext(lines) == "event: hello"
                await Board(redis, settings).create(TaskSpec(kind="docs", title="Seen live"))
                while not (line := await anext(lines)).startswith("data: {\"events\""):
                    pass
        batch = json.loads(line.removeprefix("data: "))
    assert [(e["task_id"], e["event"], e["state"]) for e in batch["events"]] == [("t-1", "created", "open")]
    assert batch["tasks"]["t-1"]["title"] == "Seen live"
    assert batch["counts"]["open"] == 1


def test_cli_issues_tokens_and_refuses_open_read_off_loopback(settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_WEB_SECRET", SECRET)
    monkeypatch.setenv("SWARM_NAME", settings.name)
    monkeypatch.setenv("SWARM_HOME", str(settings.home))
    runner = CliRunner()
    issued = runner.invoke(cli, ["web", "token", "--role", "agent", "--agent", "worker-1", "--ttl", "1h"])
    assert issued.exit_code == 0, issued.output
    value = issued.stdout.strip().splitlines()[-1]
    who = Tokens(SECRET.encode(), settings.name).verify(value)
    assert (who.role, who.name) == ("agent", "worker-1")
    missing = runner.invoke(cli, ["web", "token", "--role", "agent"])
    assert (missing.exit_code, missing.stderr) == (
        1, "error: --agent is missing: an agent token acts as one agent, for example --role agent --agent agent-1\n")
    wide = runner.invoke(cli, ["web", "--open-read", "--host", "0.0.0.0"])  # noqa: S104  (refused, never bound)
    assert (wide.exit_code, wide.stderr) == (
        1, "error: --open-read lets anyone who can connect read the board, so it binds only to 127.0.0.1, not "
           "0.0.0.0: drop --host, or drop --open-read and hand out viewer tokens\n")


def test_swarm_web_serves_until_stopped(settings: Settings) -> None:
    assert settings.redis_url is not None
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_HOME": str(settings.home), "SWARM_WEB_SECRET": SECRET}
    with subprocess.Popen([sys.executable, "-m", "swarm", "web", "--port", "0", "--open-read"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            found = re.match(r"swarm web: http://127\.0\.0\.1:(\d+)/ for swarm test \(reading without a token", line)
            assert found, line
            deadline = time.monotonic() + 20
            while True:
                try:
                    health = httpx.get(f"http://127.0.0.1:{found[1]}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "swarm web did not answer within 20 s"
                    time.sleep(0.1)
            assert health.json()["status"] == "ok"
            assert httpx.get(f"http://127.0.0.1:{found[1]}/api/board", timeout=5).status_code == 200  # open read
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) in (0, -15)  # stopped by SIGTERM, shut down gracefully or not
