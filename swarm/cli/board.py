"""`swarm board`: the task board as a rich table (live with `--watch`), and what the task and agent
commands share with it: option checks that say how to fix a bad value, and the task table."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from swarm.board import STATES, TERMINAL, Board, Task
from swarm.bus import Bus
from swarm.cli.common import AsJson, SwarmGroup, csv, out, print_json, run_with_bus, safe
from swarm.connection import doing, text
from swarm.errors import ConfigError
from swarm.protocol import AGENT_PATTERN, CAP_PATTERN, KIND_PATTERN, now_ms

if TYPE_CHECKING:  # rich's renderables are imported where they are drawn: `--json` never loads them
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

T = TypeVar("T")

StateOpt = Annotated[str | None, typer.Option("--state", help=f"Only tasks in this state: {', '.join(STATES)}.")]
KindOpt = Annotated[str | None, typer.Option("--kind", help="Only tasks of this kind.")]

STYLE = {"open": "cyan", "assigned": "yellow", "running": "blue", "blocked": "magenta",
         "done": "green", "failed": "red", "cancelled": "dim"}
ACTIVE = tuple(s for s in STATES if s not in TERMINAL)
_ORDER = {s: i for i, s in enumerate(STATES)}
"""Sort rank of each state; a state the board may add later sorts last instead of failing the view."""
_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces: all the board ever hands out


def with_board(fn: Callable[[Board], Awaitable[T]]) -> T:
    """Run `fn` with a Board on a fresh connection (embedded server on demand)."""
    return run_with_bus(lambda bus: fn(Board(bus.redis, bus.settings)))


# --- option checks: each names the option, shows the value, says what a good one looks like ----
def check_state(value: str | None) -> str | None:
    """A `--state` value, or ConfigError."""
    if value is not None and value not in STATES:
        raise ConfigError(f"--state {value!r} is not a task state; use one of: {', '.join(STATES)}")
    return value


def check_kind(value: str | None, option: str = "--kind") -> str | None:
    """A task kind (`--kind`), or ConfigError."""
    if value is not None and not re.match(KIND_PATTERN, value):
        raise ConfigError(
            f"{option} {value!r} is not a task kind: use 1-32 characters, a lowercase letter first, "
            "then lowercase letters, digits, '_' or '-' (for example audit)"
        )
    return value


def check_caps(values: Sequence[str] | None, option: str = "--can") -> list[str]:
    """Capabilities given as `--can a,b --can c`; each is a kind-like name or `*` (anything)."""
    caps = csv(values)
    for cap in caps:
        if not re.match(CAP_PATTERN, cap):
            raise ConfigError(
                f"{option} {cap!r} is not a capability: use comma-separated names of 1-32 characters, a "
                "lowercase letter first, then lowercase letters, digits, '_' or '-' (for example "
                f"{option} audit,docs), or * for any task"
            )
    return caps


def check_agent(value: str, option: str) -> str:
    """An agent name (`--agent`, `--to`), or ConfigError."""
    if not re.match(AGENT_PATTERN, value):
        raise ConfigError(
            f"{option} {value!r} is not an agent name: use 1-64 letters, digits, '_', '.' or '-' (for example agent-1)"
        )
    return value


def check_id(value: str) -> str:
    """A task id argument, or ConfigError (it keeps terminal control characters out of messages)."""
    if not _ID.fullmatch(value):
        raise ConfigError(f"task id {value!r} is not valid: ids look like t-42; `swarm task list` shows them")
    return value


# --- rendering -----------------------------------------------------------------------------------
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def check_duration(value: str, option: str) -> float:
    """A duration like `90s`, `10m`, `1h`, `7d` (a bare number is seconds), in seconds, or ConfigError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise ConfigError(f"{option} {value!r} is not a duration: use a number with s, m, h, d or w "
                          "(for example 10m or 7d)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def check_time(value: str, option: str) -> int:
    """An ISO 8601 time (`2026-12-01T09:00`, local time unless it names a zone) in ms, or ConfigError."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r} is not a time: use ISO 8601, for example 2026-12-01T09:00 "
                          "or 2026-12-01T09:00+01:00") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local zone, as a person typing a time means it
    return int(moment.timestamp() * 1000)


def seconds_left(until_ms: int) -> str:
    """`12.3s` until a time in ms, or `-` when it has passed or is unset."""
    left = (until_ms - now_ms()) / 1000
    return f"{left:.1f}s" if until_ms and left > 0 else "-"


def state_text(state: str) -> Text:
    """A state, coloured."""
    from rich.text import Text  # noqa: PLC0415

    return Text(state, style=STYLE.get(state, ""))


def state_markup(state: str) -> str:
    """A state, coloured, as rich markup (states come from the board, never from users)."""
    return f"[{STYLE.get(state, 'default')}]{safe(state)}[/]"


def task_table(tasks: Sequence[Task]) -> Table:
    """One row per task: id, state, priority, kind, title, owner, attempts, lease left."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("ID", "left"), ("STATE", "left"), ("PRI", "right"), ("KIND", "left"),
                          ("TITLE", "left"), ("OWNER", "left"), ("TRIES", "right"), ("LEASE", "right")):
        table.add_column(name, justify=cast(Any, justify), no_wrap=name != "TITLE", overflow="fold")
    for t in tasks:
        table.add_row(
            safe(t.id), state_text(t.state), str(t.priority), safe(t.kind), safe(t.title), safe(t.owner or "-"),
            f"{t.attempts}/{t.max_attempts}", seconds_left(t.lease_until) if t.owner else "-",
        )
    return table


def counts_line(counts: dict[str, int]) -> Text:
    """`open 3 · assigned 1 · ... (N tasks)`, each state in its colour."""
    from rich.text import Text  # noqa: PLC0415

    line = Text()
    for i, state in enumerate(STATES):
        if i:
            line.append(" · ", style="dim")
        line.append(f"{state} {counts.get(state, 0)}", style=STYLE[state] if counts.get(state) else "dim")
    line.append(f"  ({sum(counts.values())} tasks)")
    return line


# --- the command ---------------------------------------------------------------------------------
async def snapshot(board: Board, state: str | None, kind: str | None, everything: bool, limit: int) -> dict[str, Any]:
    """Counts per state and the tasks the view shows (active ones unless `everything` or a state)."""
    states: tuple[str | None, ...] = (state,) if state else (None,) if everything else ACTIVE
    found: dict[str, Task] = {}
    for s in states:
        # One index is read after another, so a task that changes state in between is read twice (the
        # later read wins) or in a state outside `states` (a task done meanwhile): show what it is now.
        found.update((t.id, t) for t in await board.tasks(state=s, kind=kind, limit=limit))
    tasks = list(found.values())
    if state is None and not everything:  # claim order within each state reads best: urgent, then oldest
        tasks.sort(key=lambda t: (_ORDER.get(t.state, len(_ORDER)), -t.priority, t.created))
    return {"counts": await board.counts(), "tasks": tasks, "paused": await board.paused()}


def render(view: dict[str, Any], title: str) -> Group:
    """The board view: a header, the table (or a note when empty) and the counts."""
    from rich.console import Group  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    tasks: list[Task] = view["tasks"]
    body: Table | Text = task_table(tasks) if tasks else Text("no tasks to show", style="dim")
    parts: list[Table | Text] = [Text(title, style="bold"), body, counts_line(view["counts"])]
    if view.get("paused"):
        parts.append(Text(f"paused: {', '.join(view['paused'])} (`swarm resume KIND` hands them out again)",
                          style="yellow"))
    return Group(*parts)


board_app = typer.Typer(cls=SwarmGroup, add_completion=False, invoke_without_command=True,
                        help="The task board; `swarm board purge` forgets old finished tasks.")


@board_app.callback(invoke_without_command=True)
def board_view(
    ctx: typer.Context,
    state: StateOpt = None,
    kind: KindOpt = None,
    as_json: AsJson = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep the table live, redrawn on board events.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Show finished tasks too, not only active ones.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many tasks per state.")] = 200,
    interval: Annotated[
        float, typer.Option(min=0.01, help="With --watch: redraw at least this often (seconds), for lease timers.")
    ] = 1.0,
    count: Annotated[int, typer.Option(min=0, help="With --watch: stop after N redraws (0: until Ctrl-C).")] = 0,
) -> None:
    """The task board: active tasks (all with --all) and the number of tasks in each state."""
    if ctx.invoked_subcommand is None:
        board(state, kind, as_json, watch=watch, everything=everything, limit=limit, interval=interval, count=count)


def board(state: str | None, kind: str | None, as_json: bool, *, watch: bool, everything: bool, limit: int,
          interval: float, count: int) -> None:
    """The task board: active tasks (all with --all) and the number of tasks in each state."""
    check_state(state)
    check_kind(kind)
    if watch and as_json:
        raise ConfigError("--watch and --json do not combine; follow changes as JSON with "
                          "`swarm tail --stream events --json`")
    title = "swarm board" + (f" · state {state}" if state else "") + (f" · kind {kind}" if kind else "")

    async def once(bus: Bus) -> None:
        view = await snapshot(Board(bus.redis, bus.settings), state, kind, everything, limit)
        if as_json:
            print_json({"counts": view["counts"], "paused": view["paused"],
                        "tasks": [t.summary() for t in view["tasks"]]})
        else:
            out.print(render(view, safe(title)))

    async def live(bus: Bus) -> None:
        from rich.live import Live  # noqa: PLC0415

        b = Board(bus.redis, bus.settings)
        # Read on from the newest event before the first snapshot, so none between the snapshot
        # and the first XREAD goes unseen (`$` would skip it).
        with doing("reading the board-event stream"):
            newest = cast(list[Any], await bus.redis.xrevrange(b.keys.events, count=1))
        streams: dict[Any, Any] = {b.keys.events: text(newest[0][0]) if newest else "0-0"}
        drawn = 0
        with Live(console=out, auto_refresh=False) as screen:
            while True:
                screen.update(render(await snapshot(b, state, kind, everything, limit), safe(title)), refresh=True)
                drawn += 1
                if count and drawn >= count:
                    return
                # Driven by the event stream: a transition redraws at once; the timeout keeps lease
                # countdowns moving when nothing happens.
                with doing("waiting for board events"):
                    reply = cast(list[Any], await bus.redis.xread(streams, block=max(1, int(interval * 1000)),
                                                                  count=1000))
                for stream, entries in reply or []:
                    streams[text(stream)] = text(entries[-1][0])

    run_with_bus(live if watch else once)


# --- keeping the board ---------------------------------------------------------------------------
TERMINAL_STATES = ("done", "failed", "cancelled")


@board_app.command("purge")
def purge(
    older_than: Annotated[str, typer.Option("--older-than", help="Finished at least this long ago: 12h, 7d.",
                                            show_default=False)],
    state: Annotated[list[str] | None, typer.Option("--state", help="Only this finished state (repeatable; "
                                                     "default: done, failed and cancelled).", show_default=False)]
    = None,
    as_json: AsJson = False,
) -> None:
    """Forget finished tasks and their history (the captain does it by itself after SWARM_KEEP_DONE)."""
    age = check_duration(older_than, "--older-than")
    states = tuple(csv(state)) or TERMINAL_STATES
    for s in states:
        if s not in TERMINAL_STATES:
            raise ConfigError(f"--state {s!r} cannot be purged: only finished tasks are (done, failed, cancelled)")
    purged = with_board(lambda b: b.purge(int(age * 1000), states))
    if as_json:
        print_json({"purged": purged, "states": list(states), "older_than_s": age})
    else:
        out.print(f"purged {purged} finished task(s) ({', '.join(states)}) older than {older_than}")


def pause(kind: Annotated[str, typer.Argument(help="The task kind to stop handing out.", show_default=False)],
          ) -> None:
    """Hand out no task of KIND (no claim, no assignment) until `swarm resume KIND`; running ones go on."""
    checked = check_kind(kind, "KIND") or kind
    with_board(lambda b: b.pause(checked))
    out.print(f"paused {checked}: no claim or assignment hands out its tasks; `swarm resume {checked}` undoes it")


def resume(kind: Annotated[str, typer.Argument(help="The task kind to hand out again.", show_default=False)],
           ) -> None:
    """Hand out tasks of KIND again."""
    checked = check_kind(kind, "KIND") or kind
    with_board(lambda b: b.resume(checked))
    out.print(f"resumed {checked}: its tasks are handed out again")
