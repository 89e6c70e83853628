"""Progress reports: an owner saying how its task is going, between starting it and finishing it.

What `swarm task progress` and the MCP server's `report_progress` do. A report is the owner's fenced
heartbeat on the task (refused, like every owner call, once the task is no longer the caller's; it
extends the lease, so a worker that reports keeps its task) and a `status` message from the agent
naming the task, on the broadcast stream where `swarm tail`, the captain and discovery read it. The
task itself keeps no progress field: its history holds transitions, and the messages hold the talk.
"""

from __future__ import annotations

import structlog

from swarm.board import Board, Task
from swarm.bus import Bus
from swarm.errors import OverBudget, RateLimited
from swarm.protocol import StatusBody, message

log = structlog.get_logger("swarm.progress")


async def report_progress(board: Board, bus: Bus, task_id: str, token: int, text: str, *, agent: str,
                          tokens: int = 0, usd: float = 0.0) -> Task:
    """Heartbeat `task_id` as its owner `agent` with `token`, report what it used (`tokens`, `usd`, held
    against the budgets), then say `text` about it; the task, its lease extended. A refused heartbeat
    (stale token, another owner, a finished task) says nothing; a task that went over its own budget
    has failed, and OverBudget says so. Words over the publish rate (`RateLimited`) are dropped with a
    warning: the heartbeat stands."""
    said = message(StatusBody(text=text, state="working", task_id=task_id), sender=agent)  # checked first
    task = await board.heartbeat(task_id, token, agent=agent)
    if tokens or usd:
        task, over = await board.usage(task_id, token, agent=agent, tokens=tokens, usd=usd)
        if over:
            raise OverBudget(f"{task_id} went over its budget and failed: {task.reason}; stop working on it")
    try:
        await bus.publish(said)
    except RateLimited as exc:  # the heartbeat counted; the words over the publish rate are dropped
        log.warning("progress not sent", task=task_id, error=str(exc))
    return task
