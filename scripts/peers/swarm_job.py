"""The handler swarm's agents run in scripts/bench_peers.py: the job of jobs.py, named by the task's title
(seconds in its body). Agents load it with `--handler scripts/peers/swarm_job.py:handle`; the benchmark
puts scripts/peers on their PYTHONPATH so that `jobs` imports."""

from __future__ import annotations

from typing import Any

import jobs


async def handle(task: Any, ctx: Any) -> str:
    """Run the job the title names."""
    await jobs.run_async(task.title, float(task.body or 0))
    return ""
