"""`swarm mcp`: the MCP server in a real subprocess, driven through the SDK's own stdio client, against
the test server."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from redis.asyncio import Redis

from swarm.board import Board, TaskSpec
from swarm.bus import Bus
from swarm.protocol import ChatBody, Message, decode, message
from swarm.settings import Settings
from tests.helpers import ROOT, eventually

WORK_TOOLS = ["next_task", "complete_task", "fail_task", "report_progress", "read_inbox", "send_message",
              "show_board", "show_task", "create_task"]


@asynccontextmanager
async def mcp(settings: Settings, *args: str, agent: str = "claude-1", can: str = "docs",
              lease_s: float = 30.0) -> AsyncIterator[ClientSession]:
    """A `swarm mcp` process for `agent`, and an initialized client session with it."""
    assert settings.redis_url is not None
    settings.home.mkdir(parents=True, exist_ok=True)
    env = {"SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name, "SWARM_HOME": str(settings.home),
           "SWARM_LEASE_S": str(lease_s), "SWARM_HEARTBEAT_S": str(min(2.0, lease_s / 4))}
    params = StdioServerParameters(command=sys.executable, args=["-m", "swarm", "mcp", "--agent", agent, "--can",
                                                                 can, *args], env=env, cwd=str(ROOT))
    with (settings.home / f"mcp-{agent}.log").open("a") as errlog:  # the server's stderr, to read when a test fails
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """A tool's structured result; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The text of a tool error."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    [content] = result.content
    return str(getattr(content, "text", content))


async def test_lists_the_tools_and_the_captains_only_with_captain(redis: Redis, settings: Settings) -> None:
    async with mcp(settings) as session:
        assert [t.name for t in (await session.list_tools()).tools] == WORK_TOOLS
    async with mcp(settings, "--captain", agent="captain-1") as session:
        tools = (await session.list_tools()).tools
        assert [t.name for t in tools] == [*WORK_TOOLS, "assign_task", "retry_task", "cancel_task"]
        described = {t.name: t.description or "" for t in tools}
        assert described["next_task"].startswith("Get your next task: one the captain assigned to you, else the "
                                                 "most urgent ready task")
        assert "\n" not in described["next_task"]


async def test_a_model_that_thinks_past_its_lease_keeps_its_task_and_finishes_it(redis: Redis,
                                                                                settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="Document swarm.inbox", body="every public name"))
    async with mcp(settings, lease_s=1.5) as session:
        got = await call(session, "next_task")
        assert (got["task"]["id"], got["task"]["token"], got["task"]["state"]) == ("t-1", 1, "running")
        assert got["task"]["body"] == "every public name"
        assert await board.holds("t-1", "claude-1", 1)
        [card] = [a for a in await _agents(redis, settings) if a["name"] == "claude-1"]
        assert card["capabilities"] == ["docs"]
        await anyio.sleep(3.5)  # over two leases of thinking: the session renewed it meanwhile
        moved, _ = await board.reclaim_expired()
        assert moved == []
        assert await board.holds("t-1", "claude-1", 1)
        done = await call(session, "complete_task", task_id="t-1", token=1, result="drafted the docstrings")
        assert (done["state"], done["result"]) == ("done", "drafted the docstrings")
        assert await call(session, "next_task") == {
            "task": None, "message": "no ready task fits claude-1 (can docs); call next_task again later, or "
                                     "read_inbox"}


async def test_when_the_session_ends_its_tasks_go_back_to_the_board(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="one"))
    async with mcp(settings) as session:
        assert (await call(session, "next_task"))["task"]["id"] == "t-1"
    task = await eventually(lambda: _state(board, "t-1", "open"))
    assert (task.owner, task.token, task.attempts) == (None, 2, 0)
    last = (await board.history("t-1"))[-1].body
    assert (last.event, last.owner, last.detail) == ("released", None, "the agent's MCP session ended")
    assert await redis.zscore(board.keys.agent_seen, "claude-1") == 0  # marked gone at once


async def test_sigterm_gives_the_tasks_back_at_once_and_the_process_dies_of_it(redis: Redis,
                                                                                settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="one"))
    assert settings.redis_url is not None
    settings.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SWARM_REDIS_URL": settings.redis_url, "SWARM_NAME": settings.name,
           "SWARM_HOME": str(settings.home)}
    with (settings.home / "mcp-sigterm.log").open("a") as errlog:
        async with await anyio.open_process([sys.executable, "-m", "swarm", "mcp", "--agent", "claude-1", "--can",
                                             "docs"], env=env, cwd=ROOT, stderr=errlog) as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            replies = BufferedByteReceiveStream(proc.stdout)
            for request in ({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                                "protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "test", "version": "1"}}},
                            {"jsonrpc": "2.0", "method": "notifications/initialized"},
                            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                             "params": {"name": "next_task", "arguments": {}}}):
                await proc.stdin.send(json.dumps(request).encode() + b"\n")
                if "id" in request:
                    reply = json.loads(await replies.receive_until(b"\n", 1 << 20))
                    assert (reply["id"], "result" in reply) == (request["id"], True), reply
            assert await board.holds("t-1", "claude-1", 1)
            proc.send_signal(signal.SIGTERM)  # stdin stays open: the client only asked it to stop
            with anyio.fail_after(5):
                assert await proc.wait() == -signal.SIGTERM
    task = await board.get("t-1")
    assert (task.state, (await board.history("t-1"))[-1].body.detail) == ("open", "the agent's MCP session ended")


async def test_next_task_starts_a_task_the_captain_assigned_first_and_waits_for_new_work(
        redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="ready", priority=9))
    await board.create(TaskSpec(kind="docs", title="assigned", priority=1))
    async with mcp(settings) as session:
        await board.assign("t-2", "claude-1")
        got = (await call(session, "next_task"))["task"]
        assert (got["id"], got["state"], got["token"]) == ("t-2", "running", 1)
        assert (await call(session, "next_task"))["task"]["id"] == "t-1"

        async def create_later() -> None:
            await anyio.sleep(0.5)
            await board.create(TaskSpec(kind="docs", title="late"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(create_later)
            assert (await call(session, "next_task", wait_s=10))["task"]["id"] == "t-3"


async def test_bad_input_is_a_clear_tool_error(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="one"))
    async with mcp(settings) as session:
        assert await refused(session, "show_task", task_id="t-99") == (
            "Error executing tool show_task: no task t-99 on this board; `swarm task list` shows the ids")
        await call(session, "next_task")
        assert await refused(session, "complete_task", task_id="t-1", token=7, result="x") == (
            "Error executing tool complete_task: token 7 for task t-1 was never issued: use the token your claim "
            "or assignment gave you")
        assert await refused(session, "send_message", to="not a name!", text="hi") == (
            "Error executing tool send_message: to: String should match pattern "
            "'^(@all|@captain|@role:[A-Za-z0-9_.-]{1,64}|[A-Za-z0-9_.-]{1,64})$' (got 'not a name!')")
        assert await refused(session, "show_board", state="finished") == (
            "Error executing tool show_board: state 'finished' is not a task state; use one of: open, assigned, "
            "running, blocked, done, failed, cancelled")
        assert await refused(session, "create_task", kind="Docs!", title="x") == (
            "Error executing tool create_task: kind: String should match pattern '^[a-z][a-z0-9_-]{0,31}$' "
            "(got 'Docs!')")
        assert (await call(session, "show_task", task_id="t-1"))["state"] == "running"  # the session goes on


async def test_progress_inbox_messages_and_the_board(redis: Redis, settings: Settings, bus: Bus) -> None:
    board = Board(redis, settings)
    async with mcp(settings) as session:
        created = await call(session, "create_task", kind="docs", title="Document it", priority=7, key="k-1")
        assert (created["id"], created["priority"], created["created"]) == ("t-1", 7, True)
        assert (await call(session, "create_task", kind="docs", title="again", key="k-1"))["created"] is False
        view = await call(session, "show_board")
        assert (view["counts"]["open"], [t["id"] for t in view["tasks"]]) == (1, ["t-1"])
        await call(session, "next_task")
        before = (await board.get("t-1")).lease_until
        said = await call(session, "report_progress", task_id="t-1", token=1, text="half the docstrings drafted")
        assert said["lease_until"] >= before
        status = await last(redis, bus.keys.bus)
        assert (status.sender, status.kind, status.body.model_dump(exclude_none=True)) == (
            "claude-1", "status", {"text": "half the docstrings drafted", "state": "working", "task_id": "t-1"})
        assert [e["event"] for e in (await call(session, "show_task", task_id="t-1"))["history"]] == [
            "created", "claimed"]

        await bus.publish(message(ChatBody(text="please also cover swarm.bus"), sender="captain", to="claude-1"))
        await bus.publish(message(ChatBody(text="deploy freeze at 14:00"), sender="ops", to="@all"))
        mail = (await call(session, "read_inbox"))["messages"]
        assert [(m["sender"], m["to"], m["text"]) for m in mail] == [
            ("captain", "claude-1", "please also cover swarm.bus"), ("ops", "@all", "deploy freeze at 14:00")]
        assert await call(session, "read_inbox") == {"messages": []}

        sent = await call(session, "send_message", to="agent-2", text="t-1 is mine", urgent=True)
        note = await last(redis, bus.keys.inbox("agent-2"))
        assert (note.id, note.sender, note.priority, note.body.model_dump()) == (
            sent["id"], "claude-1", "urgent", {"text": "t-1 is mine"})
        failed = await call(session, "fail_task", task_id="t-1", token=1, reason="no docs tooling", retry=False)
        assert (failed["state"], failed["reason"]) == ("failed", "no docs tooling")


async def test_captain_tools_assign_retry_and_cancel(redis: Redis, settings: Settings) -> None:
    board = Board(redis, settings)
    await board.create(TaskSpec(kind="docs", title="one"))
    await board.create(TaskSpec(kind="docs", title="two"))
    async with mcp(settings, "--captain", agent="captain-1", can="*") as session:
        assigned = await call(session, "assign_task", task_id="t-1", agent="agent-2")
        assert (assigned["state"], assigned["owner"]) == ("assigned", "agent-2")
        cancelled = await call(session, "cancel_task", task_id="t-2", reason="not needed")
        assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "not needed")
        retried = await call(session, "retry_task", task_id="t-2", note="needed after all")
        assert (retried["state"], retried["attempts"]) == ("open", 0)
        assert await refused(session, "cancel_task", task_id="t-99") == (
            "Error executing tool cancel_task: no task t-99 on this board; `swarm task list` shows the ids")


async def last(redis: Redis, stream: str) -> Message:
    """The newest message in `stream`."""
    [(_, fields)] = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrevrange(stream, count=1))
    return decode(fields[b"m"])


async def _state(board: Board, task_id: str, state: str) -> Any:
    task = await board.get(task_id)
    return task if task.state == state else None


async def _agents(redis: Redis, settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in (await redis.hgetall(f"swarm:{{{settings.name}}}:agents")).values()]
