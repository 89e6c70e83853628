"""The read side of the API: the board page, a task with its history, agents, signals, dead
letters, the swarm's health, and the live feed of board events (server-sent events)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from swarm.board import STATES
from swarm.connection import doing
from swarm.discovery.repetition import Detector
from swarm.errors import SwarmError
from swarm.health import Census, Check, Limits, checks
from swarm.protocol import AGENT_PATTERN, KIND_PATTERN, now_ms
from swarm.web import live
from swarm.web.access import Ctx, Reading
from swarm.web.models import TASK_ID, BoardPage, ErrorReply, Event, Me, TaskDetail
from swarm.web.query import Filters

StateName = Literal["open", "assigned", "running", "blocked", "done", "failed", "cancelled"]
assert set(get_args(StateName)) == set(STATES)  # the board's states, spelled out for the docs
TaskId = Annotated[str, Path(pattern=TASK_ID, description="A task id, e.g. t-42.")]
REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply, "description": text} for code, text in (
        (401, "No token, or an expired or invalid one."), (403, "The token's role or agent may not do this."),
        (404, "No such task."), (409, "The board refused: stale token, illegal transition, not ready."),
        (422, "Malformed or oversize JSON, or a value out of range."),
        (503, "Redis is unreachable."))
}
PUBLISHING = {**REFUSALS, 429: {"model": ErrorReply, "description": "The sender is over its publish rate "
                                                                    "(SWARM_PUBLISH_RATE); retry later."}}
"""The refusals of routes that publish a message (send, progress)."""

router = APIRouter(prefix="/api", tags=["read"], responses=REFUSALS)


@router.get("/me", response_model=Me)
async def me(who: Reading) -> Me:
    """Who the token speaks for."""
    return Me(role=who.role, name=who.name, expires=who.expires) if who else Me(role=None, name=None, expires=None)


@router.get("/board", response_model=BoardPage)
async def board(
    ctx: Ctx,
    _: Reading,
    state: StateName | None = None,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    owner: Annotated[str | None, Query(pattern=AGENT_PATTERN)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the id or title, any case.")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> BoardPage:
    """A page of tasks, newest first, under the filters, with the counts per state."""
    page = await ctx.reader.page(Filters(state, kind, owner, q or None), offset, limit)
    return BoardPage(tasks=page.tasks, total=page.total, offset=offset, limit=limit,
                     counts=await ctx.board.counts(), now=now_ms())


@router.get("/tasks/{task_id}", response_model=TaskDetail)
async def task(ctx: Ctx, _: Reading, task_id: TaskId) -> TaskDetail:
    """One task and its whole history, oldest first."""
    history = await ctx.board.history(task_id)
    found = await ctx.board.get(task_id)
    events = [Event(id=e.id, ts=e.ts, event=e.body.event, state=e.body.state, owner=e.body.owner,
                    token=e.body.token, detail=e.body.detail) for e in history]
    return TaskDetail(task=found, history=events, now=now_ms())


@router.get("/agents")
async def agents(ctx: Ctx, _: Reading) -> dict[str, Any]:
    """Every agent: alive, stale or gone; load against concurrency; the tasks it owns."""
    return {"agents": await ctx.reader.agents(), "now": now_ms()}


@router.get("/signals")
async def signals(ctx: Ctx, _: Reading, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Repetition signals, most recently active first."""
    reps = await Detector(ctx.redis, ctx.settings).signals(limit=limit)
    return {"signals": [
        {"id": r.signal.id, "agent": r.signal.body.agent, "scope": r.scope, "open": r.open,
         "count": r.signal.body.count, "sample": r.signal.body.sample, "first_seen": r.signal.body.first_seen,
         "last_seen": r.signal.body.last_seen, "evidence": len(r.signal.body.evidence)} for r in reps
    ], "now": now_ms()}


@router.get("/dead-letters")
async def dead_letters(ctx: Ctx, _: Reading, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """The newest dead letters, with why each was dead-lettered."""
    letters = await ctx.bus.dead_letters(limit)
    return {"dead_letters": [
        {"id": d.id, "stream": d.stream, "entry": d.entry, "group": d.group, "consumer": d.consumer,
         "reason": d.reason, "at": d.at, "raw": d.raw[:4096].decode("utf-8", "backslashreplace")} for d in letters
    ], "now": now_ms()}


@router.get("/health")
async def health(ctx: Ctx, _: Reading) -> dict[str, Any]:
    """The swarm's health, as `swarm health` judges it: server, captain, agents, lag, dead letters."""
    try:
        with doing("checking the server"):
            info = await ctx.redis.info("server")
        version = info.get("valkey_version") or info.get("redis_version", "?")
        found = [Check("server", "ok", f"{info.get('server_name', 'redis')} {version}")]
        found += checks(await Census(ctx.redis, ctx.settings).take(), Limits())
    except SwarmError as exc:
        found = [Check("server", "fail", str(exc))]
    return {"healthy": all(c.status != "fail" for c in found), "checks": [asdict(c) for c in found], "now": now_ms()}


@router.get("/events", response_class=StreamingResponse, responses={200: {
    "content": {"text/event-stream": {}},
    "description": "`hello` once subscribed, then `board` events: {events, tasks, counts, now}.",
}})
async def events(ctx: Ctx, _: Reading) -> StreamingResponse:
    """Board transitions as they happen, as server-sent events (one `board` event per batch)."""
    return StreamingResponse(live.stream(ctx.hub), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
