"""A custom handler: agent-7 reviews `review` tasks by writing a checklist artifact."""

from __future__ import annotations

from typing import Any


async def handle(task: Any, ctx: Any) -> str:
    """Write a review checklist for the task's files and return where it is."""
    out = ctx.artifacts / f"{task.id}.md"
    files = "\n".join(f"- [ ] `{f}` reviewed" for f in task.files) or "- [ ] (no files named)"
    out.write_text(f"# Review: {task.title}\n\n{task.body}\n\n## Checklist\n\n{files}\n", encoding="utf-8")
    return f"review checklist written to {out}"
