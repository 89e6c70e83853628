"""Built-in handlers for discovery's task kinds (placeholder until the sources land)."""

from __future__ import annotations

from swarm.agent import Context
from swarm.board import Task


async def handle(task: Task, ctx: Context) -> str:
    """Write the task's findings to an artifact."""
    out = ctx.artifacts / f"{task.id}.md"
    out.write_text(f"# {task.title}\n\n{task.body}\n", encoding="utf-8")
    return f"artifact {out}"
