"""The swarm as tools for a model: an MCP server over stdio (`swarm mcp --agent NAME --can CAPS`).

A model (Claude Code, Codex CLI, any MCP client) joins the swarm as agent NAME for as long as its
session lives. The session registers the agent (a fresh instance id, its connections named so that a
killed session is noticed in seconds, see `swarm.presence`), heartbeats it, and renews the lease of
every task it handed the model every `heartbeat_period_s`: a model that thinks for minutes keeps
its task. When the session ends (the client closes stdin, or SIGTERM), the tasks it still holds go
back to the board at once (`release`, as agent NAME) and the agent is marked gone.

Tools: `next_task`, `complete_task`, `fail_task`, `report_progress`, `read_inbox`, `send_message`,
`show_board`, `show_task`, `create_task`; with `--captain` also `assign_task`, `retry_task` and
`cancel_task`. Their descriptions are written for the model. A refusal (unknown task, stale token, a
bad value) comes back as a tool error whose text says what to do, never as a crash.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import anyio
import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError
from redis.asyncio import Redis

from swarm.board import STATES, TERMINAL, Board, Task, TaskSpec
from swarm.bus import Bus
from swarm.connection import doing, open_redis
from swarm.errors import BackendError, SwarmError
from swarm.inbox import Inbox, as_dict
from swarm.keys import Keys
from swarm.presence import named
from swarm.progress import report_progress as say_progress
from swarm.protocol import ChatBody, HeartbeatBody, message, new_id
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings

log = structlog.get_logger("swarm.mcp")

MAX_WAIT_S = 120.0
"""The longest a tool waits (for a task, for mail): well inside an MCP client's request timeout."""
ACTIVE = tuple(s for s in STATES if s not in TERMINAL)


class Session:
    """One model's life in the swarm as agent `name` (see the module doc). `async with` it."""

    def __init__(self, redis: Redis, settings: Settings, name: str, caps: Sequence[str], *,
                 roles: Sequence[str] = ()) -> None:
        self.settings = settings
        self.name = name
        self.caps = list(caps)
        self.roles = tuple(roles)
        self.instance = new_id()
        self.connection = Keys(settings.name).connection(self.instance) if settings.presence else ""
        self.redis = named(redis, self.connection) if self.connection else redis
        self.board = Board(self.redis, settings)
        self.bus = Bus(self.redis, settings)
        self.inbox = Inbox(self.redis, settings)
        self.registry = Registry(self.redis, settings)
        self.held: dict[str, int] = {}
        """Task id -> token of every task this session handed the model and it has not finished."""
        self.replaced = False

    @asynccontextmanager
    async def alive(self) -> AsyncIterator[Session]:
        """Join (register, make the inbox groups), keep alive while inside, leave on the way out."""
        try:
            await self.inbox.join(self.name)  # before registering: broadcasts from now on are its mail
            card = AgentCard(name=self.name, capabilities=tuple(self.caps), roles=self.roles, version="mcp")
            await self.registry.register(card, self.instance, connection=self.connection)
            await self.bus.publish(message(HeartbeatBody(instance=self.instance, capacity=1),
                                           sender=self.name, to="@captain"))
            log.info("mcp session joined", agent=self.name, instance=self.instance)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        await self._leave()
        finally:
            if self.redis is not None and self.connection:
                with anyio.CancelScope(shield=True):
                    await self.redis.aclose()

    async def _keep_alive(self) -> None:
        while not self.replaced:
            await anyio.sleep(self.settings.heartbeat_period_s)
            try:
                await self.beat()
            except BackendError as exc:  # Redis away for a moment: the next beat tries again
                log.warning("mcp session heartbeat failed", agent=self.name, error=str(exc))

    async def beat(self) -> None:
        """One heartbeat: the agent is alive, and every held task's lease is renewed."""
        if not await self.registry.heartbeat(self.name, self.instance):
            self.replaced = True  # another instance registered the name: its tasks are not ours now
            self.held.clear()
            log.warning("another instance took the agent name; this session stops renewing", agent=self.name)
            return
        if self.held:
            for task_id, error in await self.board.renew(self.name, list(self.held.items())):
                if error is not None:
                    self.held.pop(task_id, None)
                    log.warning("a held task was lost", agent=self.name, task=task_id, error=str(error))

    async def _leave(self) -> None:
        for task_id, token in list(self.held.items()):
            try:
                await self.board.release(task_id, token, "the agent's MCP session ended", agent=self.name)
            except SwarmError as exc:
                log.warning("could not release a task", agent=self.name, task=task_id, error=str(exc))
        self.held.clear()
        try:
            await self.registry.deregister(self.name, self.instance)
        except SwarmError as exc:
            log.warning("could not deregister", agent=self.name, error=str(exc))
        log.info("mcp session left", agent=self.name)

    def check(self) -> None:
        """Refuse work once another instance has taken the name."""
        if self.replaced:
            raise ToolError(f"another session registered as {self.name}, so this one no longer acts for it; "
                            "restart this MCP server with another --agent name")

    async def next_task(self, wait_s: float) -> Task | None:
        """A task the captain assigned to this agent (started now), else the best ready task it can do
        (claimed), waiting up to `wait_s` for one; None when there is none."""
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            self.check()
            for task_id in sorted(await self.board.owned(self.name) - self.held.keys()):
                task = await self.board.get(task_id)
                if task.state == "assigned" and task.owner == self.name:
                    return self._hold(await self.board.start(task.id, task.token, agent=self.name))
            claimed = await self.board.claim(self.name, self.caps, 1)
            if claimed.tasks:
                return self._hold(claimed.tasks[0])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Sleep until the board changes (a task created, freed or assigned here), then look again.
            with doing("waiting for board events"):
                await self.redis.xread({self.board.keys.events: claimed.tip or "$"}, count=1,
                                       block=max(1, int(left * 1000)))

    def _hold(self, task: Task) -> Task:
        self.held[task.id] = task.token
        return task


# --- the tools ---------------------------------------------------------------------------------
TaskIdArg = Annotated[str, Field(description="The task id, e.g. t-42.")]
TokenArg = Annotated[int, Field(description="The token next_task gave you with the task.")]


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    """A swarm refusal or a bad value becomes a tool error the model can read and act on."""
    try:
        yield
    except SwarmError as exc:
        raise ToolError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ToolError(f"{where}: {first['msg']} (got {str(first.get('input'))[:80]!r})") from None


def _task(t: Task, **extra: Any) -> dict[str, Any]:
    return {**t.summary(), **extra}


def _with_history(t: Task, events: Sequence[Any]) -> dict[str, Any]:
    return _task(t, history=[{"at": e.ts, "event": e.body.event, "state": e.body.state, "owner": e.body.owner,
                              "token": e.body.token, "detail": e.body.detail} for e in events])


def build(session: Session, *, captain: bool = False) -> MCPServer:
    """The MCP server whose tools act for `session`'s agent (captain tools too with `captain`)."""
    server: MCPServer = MCPServer(
        "swarm", version="1",
        instructions=(f"You are agent {session.name} in a swarm of agents that share a task board. Call "
                      "next_task to get work, do it, then complete_task or fail_task with the token you were "
                      "given; report_progress on long work; read_inbox between tasks for messages to you."),
    )
    _work_tools(server, session)
    _talk_tools(server, session)
    _board_tools(server, session.board)
    if captain:
        _captain_tools(server, session.board)
    return server


def _work_tools(server: MCPServer, session: Session) -> None:
    name, board = session.name, session.board

    @server.tool()
    async def next_task(
        wait_s: Annotated[float, Field(description="Seconds to wait for a task when none is ready now "
                                                   f"(0 to {MAX_WAIT_S:.0f}).", ge=0)] = 0.0,
    ) -> dict[str, Any]:
        """Get your next task: one the captain assigned to you, else the most urgent ready task that your
        capabilities fit (it is yours alone from now on). Call it when you are ready for work. Returns
        the task (id, token, title, body, kind, ...) or {"task": null} when nothing is ready; keep the id
        and the token, every later call about the task needs both. Your lease on the task is renewed
        for you while this session lasts; finish with complete_task or fail_task."""
        with _as_tool_errors():
            task = await session.next_task(wait_s)
        if task is None:
            return {"task": None, "message": f"no ready task fits {name} (can {','.join(session.caps)}); "
                                             "call next_task again later, or read_inbox"}
        return {"task": _task(task), "next": f"do the work, then complete_task(task_id={task.id!r}, "
                                             f"token={task.token}, result=...) or fail_task(...)"}

    @server.tool()
    async def complete_task(
        task_id: TaskIdArg, token: TokenArg,
        result: Annotated[str, Field(description="What you did and what came of it, for the humans and "
                                                 "agents who read the board.")] = "",
    ) -> dict[str, Any]:
        """Report your task done, with its result. Call it once the work is finished. Returns the task,
        now done. Refused if the task is no longer yours (stale token): then drop that work."""
        with _as_tool_errors():
            session.check()
            task = await board.complete(task_id, token, result, agent=name)
        session.held.pop(task_id, None)
        return _task(task)

    @server.tool()
    async def fail_task(
        task_id: TaskIdArg, token: TokenArg,
        reason: Annotated[str, Field(description="Why it failed, so that whoever retries knows.")],
        retry: Annotated[bool, Field(description="False if trying again cannot help.")] = True,
    ) -> dict[str, Any]:
        """Report that you could not do your task. It goes back to the board and is retried after a
        backoff while attempts remain (unless retry is false), else it ends failed. The task is no
        longer yours either way. Returns the task with its new state."""
        with _as_tool_errors():
            session.check()
            task = await board.fail(task_id, token, reason, agent=name, retry=retry)
        session.held.pop(task_id, None)
        return _task(task)

    @server.tool()
    async def report_progress(
        task_id: TaskIdArg, token: TokenArg,
        text: Annotated[str, Field(description="One line on how it is going, e.g. 'tests pass, writing docs'.")],
    ) -> dict[str, Any]:
        """Say how your task is going; everyone following the swarm sees it. Call it now and then on
        long work. Returns the task (its lease extended). Refused if the task is no longer yours."""
        with _as_tool_errors():
            session.check()
            task = await say_progress(board, session.bus, task_id, token, text, agent=name)
        return _task(task)


def _talk_tools(server: MCPServer, session: Session) -> None:
    name = session.name

    @server.tool()
    async def read_inbox(
        wait_s: Annotated[float, Field(description=f"Seconds to wait for a first message when there is none "
                                                   f"(0 to {MAX_WAIT_S:.0f}).", ge=0)] = 0.0,
    ) -> list[dict[str, Any]]:
        """Read the messages sent to you since you last read: to you by name, to your roles, and chat
        to everyone. Call it between tasks. Each message comes once, oldest first: sender, to, kind,
        text and body. Returns [] when there is nothing new."""
        with _as_tool_errors():
            messages = await session.inbox.read(name, min(wait_s, MAX_WAIT_S))
        return [as_dict(m) for m in messages]

    @server.tool()
    async def send_message(
        to: Annotated[str, Field(description="An agent's name, '@captain', '@all' or '@role:<role>'.")],
        text: Annotated[str, Field(description="The message.")],
        urgent: Annotated[bool, Field(description="Mark it urgent.")] = False,
    ) -> dict[str, Any]:
        """Send a chat message to another agent, the captain, a role or everyone. Returns its id."""
        with _as_tool_errors():
            msg = message(ChatBody(text=text), sender=name, to=to, priority="urgent" if urgent else "normal")
            await session.bus.publish(msg)
        return {"id": msg.id, "to": msg.to}


def _board_tools(server: MCPServer, board: Board) -> None:
    @server.tool()
    async def show_board(
        state: Annotated[str | None, Field(description=f"Only this state: {', '.join(STATES)}; "
                                                       "default: every unfinished task.")] = None,
        kind: Annotated[str | None, Field(description="Only tasks of this kind.")] = None,
        limit: Annotated[int, Field(description="At most this many tasks per state.", ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """See the task board: how many tasks are in each state, and the tasks themselves (unfinished
        ones unless you ask for a state), oldest first. Read-only."""
        if state is not None and state not in STATES:
            raise ToolError(f"state {state!r} is not a task state; use one of: {', '.join(STATES)}")
        with _as_tool_errors():
            tasks = [t for s in ((state,) if state else ACTIVE) for t in await board.tasks(s, kind, limit)]
            counts = await board.counts()
        return {"counts": counts, "tasks": [_task(t) for t in tasks]}

    @server.tool()
    async def show_task(task_id: TaskIdArg) -> dict[str, Any]:
        """One task in full with its history (every transition, oldest first). Read-only."""
        with _as_tool_errors():
            events = await board.history(task_id)
            return _with_history(await board.get(task_id), events)

    @server.tool()
    async def create_task(
        kind: Annotated[str, Field(description="What sort of work, lowercase, e.g. docs, audit, fix; agents "
                                               "that can do this kind take it.")],
        title: Annotated[str, Field(description="One line saying what to do.")],
        body: Annotated[str, Field(description="The details someone needs to do it.")] = "",
        priority: Annotated[int, Field(description="0 (lowest) to 9 (most urgent).", ge=0, le=9)] = 5,
        key: Annotated[str, Field(description="A dedup key: creating again with the same key returns the "
                                              "first task instead of a copy.")] = "",
        blocked_by: Annotated[list[str] | None, Field(description="Ids of tasks that must be done first.")] = None,
        caps: Annotated[list[str] | None, Field(description="Capabilities needed (default: the kind).")] = None,
        files: Annotated[list[str] | None, Field(description="Files the task touches.")] = None,
    ) -> dict[str, Any]:
        """Put a new task on the board for the swarm (yourself included) to do. Returns the task and
        whether it was created (false: a task with that key exists already, and that one is returned)."""
        with _as_tool_errors():
            spec = TaskSpec(kind=kind, title=title, body=body, priority=priority, key=key,
                            blocked_by=tuple(blocked_by or ()), caps=tuple(caps or ()), files=tuple(files or ()))
            task, created = await board.create(spec)
        return _task(task, created=created)


def _captain_tools(server: MCPServer, board: Board) -> None:
    @server.tool()
    async def assign_task(
        task_id: TaskIdArg,
        agent: Annotated[str, Field(description="The agent to give it to.")],
        reassign: Annotated[bool, Field(description="Take it from its current owner if it has one.")] = False,
    ) -> dict[str, Any]:
        """(Captain) Give an open, ready task to an agent; with reassign, take it from its current owner
        (whose token stops working). The agent's inbox gets the assignment. Returns the task."""
        with _as_tool_errors():
            return _task(await board.assign(task_id, agent, force=reassign))

    @server.tool()
    async def retry_task(
        task_id: TaskIdArg,
        note: Annotated[str, Field(description="Why it is worth another try.")] = "",
    ) -> dict[str, Any]:
        """(Captain) Run a failed or cancelled task again: open, attempts from 0, a new token, its history
        kept. Returns the task."""
        with _as_tool_errors():
            return _task(await board.retry(task_id, note))

    @server.tool()
    async def cancel_task(
        task_id: TaskIdArg,
        reason: Annotated[str, Field(description="Why (kept in its history).")] = "cancelled",
    ) -> dict[str, Any]:
        """(Captain) Cancel a task that has not finished; its owner's token stops working. Returns the task."""
        with _as_tool_errors():
            return _task(await board.cancel(task_id, reason))


async def serve(settings: Settings, name: str, caps: Sequence[str], *, captain: bool = False,
                roles: Sequence[str] = ()) -> None:
    """Run the MCP server on stdin/stdout until the client hangs up or SIGTERM/SIGINT comes; the
    session's tasks are released on the way out."""
    async with open_redis(settings) as redis, Session(redis, settings, name, caps, roles=roles).alive() as session:
        server = build(session, captain=captain)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            await server.run_stdio_async()
            tg.cancel_scope.cancel()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return
