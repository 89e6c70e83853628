"""`swarm demo`: the main job, one command on the embedded server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from swarm.board import STATES, Task
from swarm.cli.common import out, run_loop, settings
from swarm.connection import open_redis
from swarm.demo import Summary, roster, run_demo
from swarm.errors import ConfigError
from swarm.logs import configure


def _view(summary: Summary, tasks: list[Task]) -> Table:
    table = Table(title="swarm demo: live board", box=None, title_justify="left")
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_row(*(str(sum(t.state == s for t in tasks)) for s in STATES))
    table.caption = (f"{summary.messages} messages seen, {summary.signals} signals, "
                     f"{sum(summary.found.values())} tasks found, {sum(summary.done.values())} done")
    return table


def demo(
    path: Annotated[Path, typer.Option("--path", help="The workspace to find work in.")] = Path(),
    agents: Annotated[Path, typer.Option(help="Roster folder (the built-in eight when it has no cards).")]
    = Path("agents"),
    max_seconds: Annotated[float, typer.Option(min=5, help="Stop after this long even if work is left.")] = 55.0,
    swarm: Annotated[str, typer.Option(help="Swarm name to run in; its board is wiped first.")] = "demo",
    live: Annotated[bool, typer.Option(help="Show the live board while it runs.")] = True,
) -> None:
    """Run the demo swarm: chatter becomes signals, signals find work in --path, agents do it."""
    if not path.is_dir():
        raise ConfigError(f"--path {path} is not a directory; point it at the code to find work in")
    if swarm == settings().name and swarm != "demo":
        raise ConfigError(f"--swarm {swarm!r} is your SWARM_NAME; the demo wipes its board, so pick another name")
    s = settings().model_copy(update={"name": swarm})
    if "SWARM_LOG_LEVEL" not in os.environ:
        configure("warning")  # the live board is the output; info logs would scroll it away
    cards = roster(agents)
    workspace = path.resolve()

    async def go() -> Summary:
        async with open_redis(s) as redis:
            if not live:
                return await run_demo(redis, s, workspace, cards=cards, max_s=max_seconds)
            with Live(_view(Summary(), []), console=out, refresh_per_second=4, transient=False) as screen:
                return await run_demo(redis, s, workspace, cards=cards, max_s=max_seconds,
                                      on_tick=lambda summ, tasks: screen.update(_view(summ, tasks)))

    summary = run_loop(s, go)
    found = ", ".join(f"{n} {k}" for k, n in sorted(summary.found.items())) or "none"
    done = sum(summary.done.values())
    out.print(f"\n[bold]swarm demo[/bold] finished in {summary.seconds:.1f}s on {workspace}")
    out.print(f"  messages seen:      {summary.messages} "
              f"({summary.chatter} scripted chatter, the rest the agents' own)")
    out.print(f"  chatter coalesced:  {summary.coalesced_share:.0%} of {summary.idle} idle messages folded into "
              f"{summary.signals} signals (the captain sees the signals, not the flood)")
    out.print(f"  tasks found:        {found}")
    left = f" ({summary.open} still open)" if summary.open else ""
    out.print(f"  done / failed:      {done} / {summary.failed}{left}")
    out.print(f"  artifacts:          {summary.artifacts}")
