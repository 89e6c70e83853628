"""`swarm agents`: every registered agent with its capabilities, liveness and current load."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from swarm.board import Board
from swarm.bus import Bus
from swarm.cli.common import AsJson, out, print_json, run_with_bus, safe
from swarm.protocol import now_ms
from swarm.registry import AgentInfo, Registry

LIVENESS_STYLE = {"alive": "green", "stale": "yellow", "gone": "dim"}


def row(info: AgentInfo, tasks: set[str]) -> dict[str, Any]:
    """The JSON form of one agent: its card, liveness, and the tasks it owns now."""
    card = info.card
    return {
        "name": card.name, "capabilities": list(card.capabilities), "roles": list(card.roles),
        "concurrency": card.concurrency, "liveness": info.liveness, "last_seen": info.last_seen,
        "load": len(tasks), "tasks": sorted(tasks), "instance": card.instance, "host": card.host,
        "pid": card.pid, "version": card.version, "started_at": card.started_at,
    }


def ago(ms: int) -> str:
    """`3.2s ago`, `4m ago`, or `never` for a time in ms."""
    if not ms:
        return "never"
    s = max(0.0, (now_ms() - ms) / 1000)
    return f"{s:.1f}s ago" if s < 60 else f"{s / 60:.0f}m ago" if s < 3600 else f"{s / 3600:.1f}h ago"


def agents(as_json: AsJson = False) -> None:
    """Registered agents: capabilities, load against concurrency, liveness, last heartbeat."""

    async def go(bus: Bus) -> list[dict[str, Any]]:
        board = Board(bus.redis, bus.settings)
        return [row(info, await board.owned(info.card.name)) for info in await Registry(bus.redis, bus.settings).all()]

    rows = run_with_bus(go)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no agents registered; start one with `swarm agent run --name NAME --can CAPS`")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("NAME", "CAN", "LOAD", "LIVENESS", "LAST SEEN", "TASKS", "HOST/PID"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            safe(r["name"]), safe(",".join(r["capabilities"]) or "-"), f"{r['load']}/{r['concurrency']}",
            Text(r["liveness"], style=LIVENESS_STYLE[r["liveness"]]), ago(r["last_seen"]),
            safe(", ".join(r["tasks"]) or "-"), safe(f"{r['host']}/{r['pid']}"),
        )
    out.print(table)
