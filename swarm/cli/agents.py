"""`swarm agents`: every registered agent with its capabilities, liveness and current load;
`--prune` forgets the gone ones."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from swarm.board import Board
from swarm.bus import Bus
from swarm.cli.common import AsJson, out, print_json, run_with_bus, safe
from swarm.protocol import now_ms
from swarm.registry import AgentCard, AgentInfo, Registry

LIVENESS_STYLE = {"alive": "green", "stale": "yellow", "gone": "dim"}


def registered(card: AgentCard, field: str) -> Any:
    """A card field as the agent registered it, or None when its card lacks it: a card read back
    is filled with defaults, and the defaults of host, pid and start time are the reader's own."""
    return getattr(card, field) if field in card.model_fields_set else None


def row(info: AgentInfo, tasks: set[str]) -> dict[str, Any]:
    """The JSON form of one agent: its card, liveness, and the tasks it owns now."""
    card = info.card
    return {
        "name": card.name, "capabilities": list(card.capabilities), "roles": list(card.roles),
        "concurrency": card.concurrency, "liveness": info.liveness, "last_seen": info.last_seen,
        "load": len(tasks), "tasks": sorted(tasks), "instance": card.instance, "host": registered(card, "host"),
        "pid": registered(card, "pid"), "version": card.version, "started_at": registered(card, "started_at"),
    }


def long_gone(info: AgentInfo, now: int, after_s: float) -> bool:
    """Gone for longer than `after_s` (`SWARM_FORGET_AGENTS_AFTER`): counted from its last heartbeat,
    or, for an agent that deregistered (the registry keeps no time for that), from its start."""
    since = info.last_seen or registered(info.card, "started_at") or 0
    return info.liveness == "gone" and now - since > after_s * 1000


def span(seconds: float) -> str:
    """`1 day`, `2.5 h`, `10 min`, `30 s`."""
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            n = seconds / size
            return f"{n:.3g} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds:.3g} s"


def ago(ms: int) -> str:
    """`3.2s ago`, `4m ago`, or `never` for a time in ms."""
    if not ms:
        return "never"
    s = max(0.0, (now_ms() - ms) / 1000)
    return f"{s:.1f}s ago" if s < 60 else f"{s / 60:.0f}m ago" if s < 3600 else f"{s / 3600:.1f}h ago"


async def prune(registry: Registry) -> list[str]:
    """Forget every gone agent (its card and last heartbeat); the names forgotten."""
    forgot = []
    for info in await registry.all():
        if info.liveness != "gone":
            continue
        # Looked at again just before: an agent that came back under the name meanwhile keeps its card.
        # (Between this look and `forget` an agent starting under the name would still lose its card.)
        card = await registry.card(info.card.name)
        if card is not None and card.instance == info.card.instance:
            await registry.forget(info.card.name)
            forgot.append(info.card.name)
    return forgot


def agents(
    as_json: AsJson = False,
    prune_gone: Annotated[bool, typer.Option("--prune", help="Forget every gone agent (its card) instead of listing.")]
    = False,
) -> None:
    """Registered agents: capabilities, load against concurrency, liveness, last heartbeat.

    Agents gone longer than SWARM_FORGET_AGENTS_AFTER (default 1 day) are not listed; --prune forgets
    every gone agent."""

    async def go(bus: Bus) -> tuple[list[dict[str, Any]], int, float]:
        registry = Registry(bus.redis, bus.settings)
        board = Board(bus.redis, bus.settings)
        after_s, now = bus.settings.forget_agents_after, now_ms()
        known = await registry.all()
        shown = [info for info in known if not long_gone(info, now, after_s)]
        return [row(info, await board.owned(info.card.name)) for info in shown], len(known) - len(shown), after_s

    if prune_gone:
        forgot = run_with_bus(lambda bus: prune(Registry(bus.redis, bus.settings)))
        if as_json:
            print_json({"forgot": forgot})
        else:
            out.print(f"forgot {len(forgot)} gone agent{'s' * (len(forgot) != 1)}: {safe(', '.join(forgot))}"
                      if forgot else "no gone agents to forget")
        return
    rows, hidden, after_s = run_with_bus(go)
    if as_json:
        print_json(rows)
        return
    note = (f"{hidden} agent{'s' * (hidden != 1)} gone longer than {span(after_s)} not shown "
            "(SWARM_FORGET_AGENTS_AFTER); `swarm agents --prune` forgets gone agents")
    if not rows:
        out.print(note if hidden else "no agents registered; start one with `swarm agent run --name NAME --can CAPS`")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("NAME", "CAN", "LOAD", "LIVENESS", "LAST SEEN", "TASKS", "HOST/PID"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            safe(r["name"]), safe(",".join(r["capabilities"]) or "-"), f"{r['load']}/{r['concurrency']}",
            Text(r["liveness"], style=LIVENESS_STYLE[r["liveness"]]), ago(r["last_seen"]),
            safe(", ".join(r["tasks"]) or "-"), safe(f"{r['host'] or '-'}/{r['pid'] or '-'}"),
        )
    out.print(table)
    if hidden:
        out.print(note, style="dim")
