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
import typer
from redis.asyncio import Redis
from rich.live import Live
from rich.table import Table

from swarm.agent import Agent
from swarm.board import STATES, Board, Task
from swarm.bus import Bus
from swarm.captain import Captain
from swarm.cli.common import out, run_loop, safe, server_url, settings
from swarm.connection import doing, open_redis, text
from swarm.discovery.engine import GROUP as DISCOVERY_GROUP
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


DEMO_SWARM = "swarm-demo"
"""The swarm the demo runs in unless told otherwise: a name of its own, never a user's SWARM_NAME."""
MARK = "demo"
"""The key (after the swarm's prefix) the demo writes into a board it made: it wipes only such a board.
(Not in `swarm.keys`: no script and no other process uses it, and a Keys member must also be listed in
board_lib.lua and PROTOCOL.md.)"""


@dataclass
class Summary:
    """What the demo did, for the closing report. Every figure counts one thing, said here."""

    chatter: int = 0
    """Status messages the scripted chatter published on the bus, in the roster's agents' names."""
    idle: int = 0
    """...of which idle talk ("standing by", "awaiting orders"): the repetition discovery is there to catch."""
    seen: int = 0
    """Bus messages the discovery engine read: the chatter, and the status updates the agents sent
    themselves (online, working on a task)."""
    read_all: bool = False
    """Whether discovery had read all of the chatter when the demo stopped (it waits for that, up to
    --max-seconds)."""
    coalesced: int = 0
    """Messages counted into per-agent repetition signals: repeats the captain got as part of one signal
    each, not one by one (all of them among the `seen`)."""
    agent_signals: int = 0
    """Per-agent repetition signals: one agent saying the same thing over and over."""
    swarm_signals: int = 0
    """Swarm-wide repetition signals: many agents saying the same thing."""
    found: Counter[str] = field(default_factory=Counter)
    done: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    open: int = 0
    artifacts: Path = Path()
    seconds: float = 0.0

    @property
    def signals(self) -> int:
        """Every repetition signal, per agent and swarm-wide."""
        return self.agent_signals + self.swarm_signals


def _pattern(keys: Keys) -> str:
    """A SCAN pattern for every key of the swarm (its braces escaped)."""
    return f"{keys.prefix.replace('{', '[{]').replace('}', '[}]')}*"


async def reset(redis: Redis, keys: Keys) -> None:
    """Delete every key of the demo swarm, so each run starts from an empty board."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=_pattern(keys), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


async def take_board(redis: Redis, keys: Keys) -> None:
    """Wipe the swarm's board for a fresh run, and mark it as the demo's; ConfigError, touching
    nothing, when the swarm has keys but not the mark: a board the demo did not make is not its to wipe."""
    mark = keys.prefix + MARK
    with doing("checking the demo's board"):
        ours = bool(await redis.exists(mark))
        cursor = 0
        while not ours:
            cursor, found = await redis.scan(cursor, match=_pattern(keys), count=1000)
            if found:
                raise ConfigError(
                    f"swarm {keys.swarm!r} on this server has a board that `swarm demo` did not make, and the "
                    "demo wipes its board before it runs; run the demo with another --swarm NAME"
                )
            if not cursor:
                break
    with doing("wiping the demo's board"):
        await reset(redis, keys)
        await redis.set(mark, "made by `swarm demo`, which wipes this board on each run")


async def discovery_read(redis: Redis, keys: Keys, last_id: str) -> bool:
    """True once the discovery engine has handled every bus entry up to `last_id`: delivered to its
    consumer group, and acknowledged (which the consumer does after the handler, signals included)."""
    with doing("checking what discovery has read"):
        groups = await redis.xinfo_groups(keys.bus)
        pending = await redis.xpending_range(keys.bus, DISCOVERY_GROUP, min="-", max=last_id, count=1)
    delivered = next((text(g["last-delivered-id"]) for g in groups if text(g["name"]) == DISCOVERY_GROUP), "0-0")
    return _entry(delivered) >= _entry(last_id) and not pending


def _entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def chatter(bus: Bus, names: list[str], rounds: int, period: float, seed: int = 7) -> tuple[int, int, str]:
    """Realistic agent talk: mostly idle paraphrases, some progress. Returns (messages, idle ones,
    the bus entry id of the last one)."""
    rng = random.Random(seed)
    sent = idle = 0
    last = "0-0"
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
        last = (await bus.publish_many(batch))[-1]
        sent += len(batch)
        await anyio.sleep(period * (0.5 + rng.random()) if n else period)
    return sent, idle, last


def roster(folder: Path | None) -> list[RosterCard]:
    """The enabled cards of the roster in `folder` when it has cards, else the built-in demo roster of
    eight. (The disabled ones are recipes, such as the coding agents' of `agents/`.)"""
    if folder is not None and folder.is_dir() and any(folder.glob("*.toml")):
        return [card for card in load_roster(folder) if card.enabled]
    return list(DEFAULT_ROSTER)


async def run_demo(
    redis: Redis, settings: Settings, workspace: Path, *, cards: list[RosterCard], max_s: float = 55.0,
    rounds: int = 12, period: float = 0.25, on_tick: Callable[[Summary, list[Task]], None] | None = None,
    discovery: Discovery | None = None,
) -> Summary:
    """Run the demo swarm until discovery has read all the chatter and the work it found is finished
    (or `max_s`), let the agents drain, and return the summary. The swarm's board is wiped first, and
    must be one the demo made (`take_board`). `discovery`: the engine to run (default: all sources)."""
    started = time.monotonic()
    keys = Keys(settings.name)
    await take_board(redis, keys)
    board = Board(redis, settings)
    bus = Bus(redis, settings)
    workers = [c for c in cards if not c.captain]
    captain_card = next((c for c in cards if c.captain), None)
    engine = discovery or Discovery(redis, settings, workspace)
    summary = Summary(artifacts=(settings.home / "artifacts").resolve())
    stop = anyio.Event()
    # The agents stop by `stop`, not by a cancel: they finish or release their tasks and deregister
    # (cancelled, they left their tasks running, owned by no one, until the leases ran out). The captain
    # and discovery are cancelled first: the captain would hand a released task back to a leaving agent.
    async with anyio.create_task_group() as crew:
        async with anyio.create_task_group() as chiefs:
            await chiefs.start(engine.run)
            chief = captain_card.name if captain_card else "captain"
            await chiefs.start(Captain(redis, settings, instance=f"{chief}.{new_id()}").run)
            for card in workers:
                handler = load_handler(card.handler, card.path.parent if card.path != Path() else None)
                agent = Agent(redis, settings, card.agent_card(), handler, workspace=workspace,
                              grace_s=min(card.grace_s, 2.0), claim=False)
                await crew.start(agent.run, stop)
            summary.chatter, summary.idle, last = await chatter(bus, [c.name for c in workers], rounds, period)
            with anyio.move_on_after(max(1.0, max_s - (time.monotonic() - started))):
                while True:
                    # Finished only once discovery has read all the chatter: under load it lags behind, and
                    # the board can look finished (the work of the first signals done) while chatter that
                    # makes more signals, and more work, is still unread. Read first, then the tasks, so
                    # that whatever that chatter created is on the board when the tasks are looked at.
                    summary.read_all = await discovery_read(redis, keys, last)
                    tasks = await board.tasks(limit=10_000)
                    _fill(summary, engine, tasks)
                    if on_tick:
                        on_tick(summary, tasks)
                    if summary.read_all and tasks and all(t.terminal for t in tasks):
                        break
                    await anyio.sleep(0.25)
            chiefs.cancel_scope.cancel()
        stop.set()
    tasks = await board.tasks(limit=10_000)
    _fill(summary, engine, tasks)
    reps = await Detector(redis, settings).signals(limit=10_000)
    summary.agent_signals = sum(r.scope == "agent" for r in reps)
    summary.swarm_signals = sum(r.scope == "swarm" for r in reps)
    summary.coalesced = sum(r.signal.body.count for r in reps if r.scope == "agent")
    summary.seconds = time.monotonic() - started
    return summary


def _fill(summary: Summary, discovery: Discovery, tasks: list[Task]) -> None:
    summary.seen = discovery.seen
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
    table.caption = (f"{summary.chatter} chatter messages sent, {summary.seen} bus messages read by discovery, "
                     f"{sum(summary.found.values())} tasks found, {sum(summary.done.values())} done")
    return table


def demo(
    path: Annotated[Path, typer.Option("--path", help="The workspace to find work in.")] = Path(),
    agents: Annotated[Path, typer.Option(help="Roster folder (the built-in eight when it has no cards).")]
    = Path("agents"),
    max_seconds: Annotated[float, typer.Option(min=5, help="Stop after this long even if work is left.")] = 55.0,
    swarm: Annotated[str, typer.Option(help="Swarm name to run in; its board (one the demo made) is wiped first.")]
    = DEMO_SWARM,
    live: Annotated[bool, typer.Option(help="Show the live board while it runs.")] = True,
) -> None:
    """Run the demo swarm: chatter becomes signals, signals find work in --path, agents do it."""
    if not path.is_dir():
        raise ConfigError(f"--path {path} is not a directory; point it at the code to find work in")
    if swarm == settings().name:
        raise ConfigError(f"--swarm {swarm!r} is your SWARM_NAME; the demo wipes its board, so pick another name "
                          "(--swarm NAME)")
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

    server_url(s)  # start the embedded server (saying so) before the live board takes the screen
    summary = run_loop(s, go)
    for line in report(summary, workspace, swarm):
        out.print(line)


def report(summary: Summary, workspace: Path, swarm: str) -> list[str]:
    """The closing summary (rich markup), each figure with what it counts."""
    found = ", ".join(f"{n} {k}" for k, n in sorted(summary.found.items())) or "none"
    done = sum(summary.done.values())
    agents = f"{summary.chatter} status messages published in the agents' names, {summary.idle} of them idle talk"
    if summary.read_all:
        read = (f"{summary.seen} bus messages: those {summary.chatter} and {summary.seen - summary.chatter} "
                "status updates the agents sent themselves")
    else:
        read = (f"{summary.seen} bus messages; the demo stopped (--max-seconds) before discovery had read all "
                "the chatter")
    repeats = (f"{summary.coalesced} of those {summary.seen} were repeats the captain got inside "
               f"{summary.agent_signals} per-agent signals, not one by one; {summary.swarm_signals} swarm-wide "
               f"signal{'s' * (summary.swarm_signals != 1)}")
    left = f" ({summary.open} still open)" if summary.open else ""
    return [
        f"\n[bold]swarm demo[/bold] finished in {summary.seconds:.1f}s on {safe(str(workspace))} (swarm {safe(swarm)})",
        f"  chatter:            {agents}",
        f"  read by discovery:  {read}",
        f"  coalesced:          {repeats}",
        f"  tasks found:        {found}",
        f"  done / failed:      {done} / {summary.failed}{left}",
        f"  artifacts:          {safe(str(summary.artifacts))}",
    ]

