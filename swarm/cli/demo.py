"""`swarm demo`: the whole swarm in one command, on the embedded server (the main job).

The roster starts (eight agents, `agent-4` the captain), the agents chatter the way real fleets do
(idle talk over and over, in paraphrases, with some real progress in between), discovery coalesces
the chatter into signals and finds work in the workspace, the captain assigns it, the agents do it
and write their artifacts, and a live board shows it, then a closing summary. Everything runs in
this process as anyio tasks against a real Valkey; `swarm up` runs the same parts as separate processes.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
import anyio.lowlevel
import typer
from redis.asyncio import Redis
from rich.live import Live
from rich.table import Table

from swarm.agent import Agent
from swarm.board import STATES, Board, Task
from swarm.bus import Bus
from swarm.captain import Captain
from swarm.cli.common import out, run_loop, settings
from swarm.connection import open_redis
from swarm.discovery.engine import Discovery
from swarm.discovery.repetition import Detector
from swarm.errors import ConfigError
from swarm.handlers import load_handler
from swarm.keys import Keys
from swarm.logs import configure
from swarm.protocol import StatusBody, message, new_id
from swarm.roster import RosterCard, load_roster
from swarm.settings import Settings

IDLE = (
    "standing by", "awaiting orders", "idle, no tasks", "ack, ready for next assignment", "still standing by",
    "waiting for instructions", "nothing to do right now", "status unchanged, standing by", "ready when you are",
    "idle. awaiting orders.", "no tasks in my queue, standing by", "ping: still here, still idle",
)
PROGRESS = (
    "committed fix for flaky retry test in bus", "tests pass on main after the lease change",
    "opened PR #{n} for the captain's affinity", "merged PR #{n}: consumer reclaims dead peers",
    "deployed build {n} to staging", "refactored the board scripts, 3 files changed",
    "wrote the migration notes for v{n}", "fixed off-by-one in the window trimming",
)
DEFAULT_ROSTER = (
    RosterCard(name="agent-1", capabilities=("consolidation", "docs"), concurrency=2),
    RosterCard(name="agent-2", capabilities=("audit", "todo"), concurrency=2),
    RosterCard(name="agent-3", capabilities=("docs", "todo")),
    RosterCard(name="agent-4", captain=True),
    RosterCard(name="agent-5", capabilities=("audit", "consolidation")),
    RosterCard(name="agent-6", capabilities=("consolidation", "audit", "docs", "todo")),
    RosterCard(name="agent-7", capabilities=("audit",)),
    RosterCard(name="agent-8", capabilities=("docs",)),
)


@dataclass
class Summary:
    """What the demo did, for the closing report."""

    messages: int = 0
    chatter: int = 0
    """Status messages the scripted chatter sent (the rest of `messages` are the agents' own)."""
    idle: int = 0
    """...of which idle talk: what discovery should coalesce."""
    coalesced: int = 0
    signals: int = 0
    found: Counter[str] = field(default_factory=Counter)
    done: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    open: int = 0
    artifacts: Path = Path()
    seconds: float = 0.0

    @property
    def coalesced_share(self) -> float:
        """Share of the idle chatter that reached the captain only as part of a signal."""
        return self.coalesced / self.idle if self.idle else 0.0


async def reset(redis: Redis, keys: Keys) -> None:
    """Delete every key of the demo swarm, so each run starts from an empty board."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{keys.prefix.replace('{', '[{]').replace('}', '[}]')}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


async def chatter(bus: Bus, names: list[str], rounds: int, period: float, seed: int = 7) -> tuple[int, int]:
    """Realistic agent talk: mostly idle paraphrases, some progress. Returns (messages, idle ones)."""
    rng = random.Random(seed)
    sent = idle = 0
    for n in range(rounds):
        batch = []
        for name in names:
            if rng.random() < 0.18:
                text = rng.choice(PROGRESS).format(n=rng.randint(10, 99))
                state = "working"
            else:
                text = rng.choice(IDLE)
                state = "idle"
                idle += 1
            batch.append(message(StatusBody(text=text, state=state), sender=name))
        await bus.publish_many(batch)
        sent += len(batch)
        await anyio.sleep(period * (0.5 + rng.random()) if n else period)
    return sent, idle


def roster(folder: Path | None) -> list[RosterCard]:
    """The roster in `folder` when it has cards, else the built-in demo roster of eight."""
    if folder is not None and folder.is_dir() and any(folder.glob("*.toml")):
        return load_roster(folder)
    return list(DEFAULT_ROSTER)


async def run_demo(
    redis: Redis, settings: Settings, workspace: Path, *, cards: list[RosterCard], max_s: float = 55.0,
    rounds: int = 12, period: float = 0.25, on_tick: Callable[[Summary, list[Task]], None] | None = None,
) -> Summary:
    """Run the demo swarm until discovered work is finished (or `max_s`); return the summary."""
    started = time.monotonic()
    keys = Keys(settings.name)
    await reset(redis, keys)
    board = Board(redis, settings)
    bus = Bus(redis, settings)
    workers = [c for c in cards if not c.captain]
    captain_card = next((c for c in cards if c.captain), None)
    discovery = Discovery(redis, settings, workspace)
    summary = Summary(artifacts=(settings.home / "artifacts").resolve())
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(discovery.run)
        chief = captain_card.name if captain_card else "captain"
        await tg.start(Captain(redis, settings, instance=f"{chief}.{new_id()}").run)
        for card in workers:
            handler = load_handler(card.handler, card.path.parent if card.path != Path() else None)
            agent = Agent(redis, settings, card.agent_card(), handler, workspace=workspace, grace_s=2.0,
                          claim=False)
            await tg.start(agent.run, stop)
        summary.chatter, summary.idle = await chatter(bus, [c.name for c in workers], rounds, period)
        with anyio.move_on_after(max(1.0, max_s - (time.monotonic() - started))):
            while True:
                tasks = await board.tasks(limit=10_000)
                _fill(summary, discovery, tasks)
                if on_tick:
                    on_tick(summary, tasks)
                if tasks and all(t.terminal for t in tasks):
                    break
                await anyio.sleep(0.25)
        stop.set()
        await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    tasks = await board.tasks(limit=10_000)
    _fill(summary, discovery, tasks)
    reps = await Detector(redis, settings).signals(limit=10_000)
    summary.signals = len(reps)
    summary.coalesced = sum(r.signal.body.count for r in reps if r.scope == "agent")
    summary.seconds = time.monotonic() - started
    return summary


def _fill(summary: Summary, discovery: Discovery, tasks: list[Task]) -> None:
    summary.messages = discovery.seen
    summary.signals = discovery.signals
    summary.found = Counter(t.kind for t in tasks)
    summary.done = Counter(t.kind for t in tasks if t.state == "done")
    summary.failed = sum(t.state == "failed" for t in tasks)
    summary.open = sum(not t.terminal for t in tasks)


# --- the command --------------------------------------------------------------------------------

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
