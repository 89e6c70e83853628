"""The write side of the API, through the same `Board` methods the CLI uses.

Captain tokens steer tasks: create, assign, retry, cancel, edit (priority, title, body). Agent tokens act as
their own agent, under `/api/agents/{agent}/...`: register, claim, heartbeat, start, done, fail,
progress, read the inbox. Both send messages. Every check runs before the one call that changes
anything, so a refused request leaves nothing half-done.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from swarm.board import Task, TaskSpec
from swarm.errors import ConfigError, IllegalTransition
from swarm.inbox import Inbox, as_dict
from swarm.progress import report_progress
from swarm.protocol import AGENT_PATTERN, ChatBody, StatusBody, encode, message, new_id, now_ms
from swarm.registry import AgentCard
from swarm.web.access import Ctx, Writing
from swarm.web.api import PUBLISHING, REFUSALS, TaskId
from swarm.web.models import (
    AssignIn,
    CancelIn,
    ClaimIn,
    ClaimReply,
    CreateReply,
    DoneIn,
    EditIn,
    FailIn,
    HeartbeatIn,
    HeartbeatReply,
    InboxReply,
    ProgressIn,
    RegisterIn,
    RegisterReply,
    Renewed,
    RetryIn,
    SendIn,
    SentReply,
    TaskReply,
    TokenIn,
    refusal,
)

AgentName = Annotated[str, Path(pattern=AGENT_PATTERN, description="The agent the token acts as.")]
MAX_WAIT_S = 30.0

captain = APIRouter(prefix="/api/tasks", tags=["captain"], responses=REFUSALS)
agent = APIRouter(prefix="/api/agents/{agent}", tags=["agent"], responses=PUBLISHING)
messages = APIRouter(prefix="/api", tags=["messages"], responses=PUBLISHING)


def _reply(task: Task) -> TaskReply:
    return TaskReply(task=task, now=now_ms())


# --- the captain ---------------------------------------------------------------------------------
@captain.post("", response_model=CreateReply, status_code=201,
              responses={200: {"model": CreateReply, "description": "A task with that dedup key exists: that one."}})
async def create(ctx: Ctx, who: Writing, spec: TaskSpec, response: Response) -> CreateReply:
    """Create a task (idempotent with a dedup `key`: the first task comes back with 200)."""
    who.captain("create tasks")
    task, created = await ctx.board.create(spec)
    if not created:
        response.status_code = 200
    return CreateReply(task=task, created=created, now=now_ms())


@captain.post("/{task_id}/assign", response_model=TaskReply)
async def assign(ctx: Ctx, who: Writing, task_id: TaskId, body: AssignIn) -> TaskReply:
    """Give an open, ready task to an agent (`force`: take it from its owner); its inbox gets the assignment."""
    who.captain("assign tasks")
    return _reply(await ctx.board.assign(task_id, body.agent, force=body.force))


@captain.post("/{task_id}/cancel", response_model=TaskReply)
async def cancel(ctx: Ctx, who: Writing, task_id: TaskId, body: CancelIn) -> TaskReply:
    """Cancel a task that has not finished; its owner's token stops working."""
    who.captain("cancel tasks")
    return _reply(await ctx.board.cancel(task_id, body.reason))


@captain.post("/{task_id}/retry", response_model=TaskReply)
async def retry(ctx: Ctx, who: Writing, task_id: TaskId, body: RetryIn | None = None) -> TaskReply:
    """Put a failed or cancelled task back to open: the same task, attempts from 0, a new token,
    its history kept (a `retried` event with the note)."""
    who.captain("retry tasks")
    return _reply(await ctx.board.retry(task_id, body.note if body else ""))


@captain.patch("/{task_id}", response_model=TaskReply)
async def edit(ctx: Ctx, who: Writing, task_id: TaskId, body: EditIn) -> TaskReply:
    """Change the priority (its place in the claim order), title, body or capabilities of a task
    that is not running yet (open, blocked or assigned)."""
    who.captain("edit tasks")
    return _reply(await ctx.board.edit(task_id, priority=body.priority, title=body.title, body=body.body,
                                       caps=body.caps))


# --- an agent, acting as itself ------------------------------------------------------------------
@agent.post("/register", response_model=RegisterReply)
async def register(ctx: Ctx, who: Writing, agent: AgentName, body: RegisterIn, request: Request) -> RegisterReply:
    """Join as a new instance: its card (the tasks an earlier instance of the name still holds go back
    to the board), then the groups its mail is read through. Heartbeat with the instance it returns."""
    who.acting_as(agent)
    instance = new_id()
    host = request.client.host if request.client else ""
    card = AgentCard(name=agent, capabilities=tuple(body.capabilities), roles=tuple(body.roles),
                     concurrency=body.concurrency, version=body.version or "http", host=host, pid=0)
    moved = await ctx.board.register(agent, instance, card.model_copy(update={"instance": instance}).model_dump_json())
    # Its mail is read from here on (an assignment written in between is kept: the direct inbox is
    # read from its beginning), and a broadcast sent from now on is not missed.
    await Inbox(ctx.redis, ctx.settings).join(agent)
    return RegisterReply(name=agent, instance=instance, moved=moved)


@agent.post("/claim", response_model=ClaimReply)
async def claim(ctx: Ctx, who: Writing, agent: AgentName, body: ClaimIn | None = None) -> ClaimReply:
    """Take the best ready task this agent can do, straight to running; `task` is null when none fits."""
    who.acting_as(agent)
    caps = body.caps if body is not None else None
    if caps is None:
        card = await ctx.reader.registry.card(agent)
        if card is None:
            raise ConfigError('name the capabilities to claim with ({"caps": ["docs"]}, or ["*"] for any task), '
                              f"or register {agent} with them first")
        caps = list(card.capabilities) or ["*"]  # a card without capabilities takes any kind
    return ClaimReply(task=await ctx.board.claim_next(agent, caps), now=now_ms())


@agent.post("/heartbeat", response_model=HeartbeatReply)
async def heartbeat(ctx: Ctx, who: Writing, agent: AgentName, body: HeartbeatIn) -> HeartbeatReply:
    """Stay alive (with `instance`, once registered) and renew the lease of every task held; a
    refused lease (stale token, not the owner) means: stop working on that task."""
    who.acting_as(agent)
    if body.instance is not None and not await ctx.reader.registry.heartbeat(agent, body.instance):
        raise IllegalTransition(f"agent {agent} is not registered as instance {body.instance} (a newer instance "
                                "took the name, or it never registered): stop, or register again")
    results = await ctx.board.renew(agent, [(h.id, h.token) for h in body.tasks]) if body.tasks else []
    return HeartbeatReply(results=[
        Renewed(id=i, ok=error is None, error=None if error is None else refusal(error)[1],
                message=None if error is None else str(error)) for i, error in results
    ], now=now_ms())


@agent.post("/tasks/{task_id}/start", response_model=TaskReply)
async def start(ctx: Ctx, who: Writing, agent: AgentName, task_id: TaskId, body: TokenIn) -> TaskReply:
    """Start an assigned task (assigned -> running) with the assignment's token."""
    who.acting_as(agent)
    return _reply(await ctx.board.start(task_id, body.token, agent=agent))


@agent.post("/tasks/{task_id}/heartbeat", response_model=TaskReply)
async def task_heartbeat(ctx: Ctx, who: Writing, agent: AgentName, task_id: TaskId, body: TokenIn) -> TaskReply:
    """Extend the lease on one task."""
    who.acting_as(agent)
    return _reply(await ctx.board.heartbeat(task_id, body.token, agent=agent))


@agent.post("/tasks/{task_id}/done", response_model=TaskReply)
async def done(ctx: Ctx, who: Writing, agent: AgentName, task_id: TaskId, body: DoneIn) -> TaskReply:
    """Finish a task with its result."""
    who.acting_as(agent)
    return _reply(await ctx.board.complete(task_id, body.token, body.result, agent=agent))


@agent.post("/tasks/{task_id}/fail", response_model=TaskReply)
async def fail(ctx: Ctx, who: Writing, agent: AgentName, task_id: TaskId, body: FailIn) -> TaskReply:
    """Report a failure: open again after a backoff while attempts remain (and `retry`), else failed."""
    who.acting_as(agent)
    return _reply(await ctx.board.fail(task_id, body.token, body.reason, agent=agent, retry=body.retry))


@agent.post("/tasks/{task_id}/progress", response_model=TaskReply)
async def progress(ctx: Ctx, who: Writing, agent: AgentName, task_id: TaskId, body: ProgressIn) -> TaskReply:
    """Say how the work goes, as `swarm task progress` does: the lease is extended (fenced like a
    heartbeat) and a `working` status message naming the task goes on the bus."""
    who.acting_as(agent)
    status = message(StatusBody(text=body.text, state="working", task_id=task_id), sender=agent)
    encode(status, ctx.settings.max_message_bytes)  # too large: refused before the lease is touched
    return _reply(await report_progress(ctx.board, ctx.bus, task_id, body.token, body.text, agent=agent))


@agent.get("/inbox", response_model=InboxReply)
async def inbox(ctx: Ctx, who: Writing, agent: AgentName,
                wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Wait this long for one.")] = 0,
                ) -> InboxReply:
    """This agent's unread mail (its inbox, its roles' streams, chat and commands to everyone), each
    message once: read it at turn boundaries, or wait up to `wait_s` seconds for the next."""
    who.acting_as(agent)
    return InboxReply(messages=[as_dict(m) for m in await Inbox(ctx.redis, ctx.settings).read(agent, wait_s)])


# --- messages ------------------------------------------------------------------------------------
@messages.post("/messages", response_model=SentReply, status_code=201)
async def send(ctx: Ctx, who: Writing, body: SendIn) -> SentReply:
    """Send a message as the token's agent (a captain token sends as `captain`)."""
    if who.role == "viewer":
        who.captain("send messages")
    make = ChatBody(text=body.text) if body.kind == "chat" else StatusBody(text=body.text)
    msg = message(make, sender=who.name, to=body.to, priority="urgent" if body.urgent else "normal")
    entry = await ctx.bus.publish(msg)
    return SentReply(id=msg.id, entry=entry)

