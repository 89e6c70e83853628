"""The tools `swarm mcp` serves (see `swarm.mcp_server`): what each does for the session's agent, with
descriptions written for the model that reads them. A refusal becomes a tool error whose text says
what went wrong and what to do; it never ends the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from swarm.board import STATES, TERMINAL, Board, Task, TaskSpec
from swarm.errors import SwarmError
from swarm.inbox import as_dict
from swarm.progress import report_progress as say_progress
from swarm.protocol import ChatBody, message

if TYPE_CHECKING:
    from swarm.mcp_server import Session

MAX_WAIT_S = 120.0
"""The longest a tool waits (for a task, for mail): well inside an MCP client's request timeout."""
ACTIVE = tuple(s for s in STATES if s not in TERMINAL)
_F = TypeVar("_F", bound=Callable[..., Any])

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


def _tool(server: MCPServer) -> Callable[[_F], _F]:
    """`@server.tool()`, with the docstring as the description in one paragraph (what a model reads)."""

    def register(fn: _F) -> _F:
        server.add_tool(fn, description=" ".join((fn.__doc__ or "").split()))
        return fn

    return register


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

    @_tool(server)
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

    @_tool(server)
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

    @_tool(server)
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

    @_tool(server)
    async def report_progress(
        task_id: TaskIdArg, token: TokenArg,
        text: Annotated[str, Field(description="One line on how it is going, e.g. 'tests pass, writing docs'.")],
        tokens: Annotated[int, Field(description="Model tokens used since your last report (0 if unknown).",
                                     ge=0)] = 0,
        usd: Annotated[float, Field(description="Dollars spent since your last report (0 if unknown).", ge=0)] = 0.0,
    ) -> dict[str, Any]:
        """Say how your task is going; everyone following the swarm sees it. Call it now and then on
        long work, with the tokens and dollars used since your last report: budgets are enforced on
        them, and a task that goes over its own budget fails (you get an error saying so: stop then).
        Returns the task (its lease extended). Refused if the task is no longer yours."""
        with _as_tool_errors():
            session.check()
            task = await say_progress(board, session.bus, task_id, token, text, agent=name, tokens=tokens, usd=usd)
        return _task(task)


def _talk_tools(server: MCPServer, session: Session) -> None:
    name = session.name

    @_tool(server)
    async def read_inbox(
        wait_s: Annotated[float, Field(description=f"Seconds to wait for a first message when there is none "
                                                   f"(0 to {MAX_WAIT_S:.0f}).", ge=0)] = 0.0,
    ) -> dict[str, Any]:
        """Read the messages sent to you since you last read: to you by name, to your roles, and chat
        to everyone. Call it between tasks. Each message comes once, oldest first, with its sender, to,
        kind, text and body. Returns {"messages": [...]} (an empty list when there is nothing new)."""
        with _as_tool_errors():
            messages = await session.inbox.read(name, min(wait_s, MAX_WAIT_S))
        return {"messages": [as_dict(m) for m in messages]}

    @_tool(server)
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
    @_tool(server)
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

    @_tool(server)
    async def show_task(task_id: TaskIdArg) -> dict[str, Any]:
        """One task in full with its history (every transition, oldest first). Read-only."""
        with _as_tool_errors():
            events = await board.history(task_id)
            return _with_history(await board.get(task_id), events)

    @_tool(server)
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
    @_tool(server)
    async def assign_task(
        task_id: TaskIdArg,
        agent: Annotated[str, Field(description="The agent to give it to.")],
        reassign: Annotated[bool, Field(description="Take it from its current owner if it has one.")] = False,
    ) -> dict[str, Any]:
        """(Captain) Give an open, ready task to an agent; with reassign, take it from its current owner
        (whose token stops working). The agent's inbox gets the assignment. Returns the task."""
        with _as_tool_errors():
            return _task(await board.assign(task_id, agent, force=reassign))

    @_tool(server)
    async def retry_task(
        task_id: TaskIdArg,
        note: Annotated[str, Field(description="Why it is worth another try.")] = "",
    ) -> dict[str, Any]:
        """(Captain) Run a failed or cancelled task again: open, attempts from 0, a new token, its history
        kept. Returns the task."""
        with _as_tool_errors():
            return _task(await board.retry(task_id, note))

    @_tool(server)
    async def cancel_task(
        task_id: TaskIdArg,
        reason: Annotated[str, Field(description="Why (kept in its history).")] = "cancelled",
    ) -> dict[str, Any]:
        """(Captain) Cancel a task that has not finished; its owner's token stops working. Returns the task."""
        with _as_tool_errors():
            return _task(await board.cancel(task_id, reason))
