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

import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import structlog
from mcp.server.mcpserver.exceptions import ToolError
from redis.asyncio import Redis

from swarm.board import Board, Task
from swarm.bus import Bus
from swarm.connection import doing, open_redis
from swarm.errors import BackendError, SwarmError
from swarm.inbox import Inbox
from swarm.keys import Keys
from swarm.mcp_tools import MAX_WAIT_S, build
from swarm.presence import named
from swarm.protocol import HeartbeatBody, message, new_id
from swarm.registry import AgentCard, Registry
from swarm.settings import Settings

log = structlog.get_logger("swarm.mcp")


class Session:
    """One model's life in the swarm as agent `name` (see the module doc), inside `async with alive()`."""

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
        self.left = False

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
                        await self.leave()
        finally:
            if self.connection:  # the named client is this session's own
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

    async def leave(self) -> None:
        """Give back every held task (open again at once, the attempt not counted) and mark the agent
        gone; once (a second call does nothing)."""
        if self.left:
            return
        self.left = True
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
        """A task given to this agent: by the captain (handed out running) or assigned by hand (started
        now); else the best ready task it can do (claimed), waiting up to `wait_s` for one; None when
        there is none."""
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
        while True:
            self.check()
            for task_id in sorted(await self.board.owned(self.name) - self.held.keys()):
                task = await self.board.get(task_id)
                if task.owner != self.name:
                    continue
                if task.state == "running":
                    return self._hold(task)
                if task.state == "assigned":
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


async def serve(settings: Settings, name: str, caps: Sequence[str], *, captain: bool = False,
                roles: Sequence[str] = ()) -> None:
    """Run the MCP server on stdin/stdout until the client hangs up or SIGTERM/SIGINT comes; the
    session's tasks are released on the way out."""
    async with open_redis(settings) as redis, Session(redis, settings, name, caps, roles=roles).alive() as session:
        server = build(session, captain=captain)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_leave_on_signal, session)
            await server.run_stdio_async()
            tg.cancel_scope.cancel()


async def _leave_on_signal(session: Session) -> None:
    """On SIGTERM or SIGINT: give the tasks back and leave at once, then die of the signal as if it had
    not been caught. (Cancelling the server would not do: the SDK reads stdin in a thread that a cancel
    cannot interrupt, so the process would linger until the client closed the pipe.)"""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            with anyio.CancelScope(shield=True):
                await session.leave()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
