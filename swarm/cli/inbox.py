"""`swarm inbox`: an agent's unread mail, read at its turn boundaries (see `swarm.inbox`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from swarm.bus import Bus
from swarm.cli.board import check_agent
from swarm.cli.common import AsJson, out, print_json, run_with_bus, safe
from swarm.errors import ConfigError
from swarm.inbox import Inbox, as_dict, describe
from swarm.protocol import Message


def inbox(
    agent: Annotated[str, typer.Option("--agent", envvar="SWARM_AGENT", show_default=False,
                                       help="Whose mail (default: $SWARM_AGENT).")] = "",
    wait: Annotated[float, typer.Option("--wait", min=0, help="Wait up to this many seconds for the first "
                                                              "message when there is none.")] = 0.0,
    as_json: AsJson = False,
) -> None:
    """An agent's messages since it last read (to it, its roles, chat to all), each shown once.

    Oldest first: what a shell agent reads between two steps. Read messages are acknowledged once
    shown, so the next call starts after them, across restarts."""
    if not agent:
        raise ConfigError("--agent is missing: name whose mail to read, for example --agent agent-1 "
                          "(or set SWARM_AGENT)")
    name = check_agent(agent, "--agent")

    async def go(bus: Bus) -> None:
        box = Inbox(bus.redis, bus.settings)
        mail = await box.fetch(name, wait)
        _show(name, mail.messages, as_json)
        await box.ack(mail)  # only once shown: a reader killed before this shows them again next time

    run_with_bus(go)


def _show(agent: str, messages: list[Message], as_json: bool) -> None:
    if as_json:
        print_json([as_dict(m) for m in messages])
        return
    if not messages:
        out.print(f"no new messages for {safe(agent)}")
        return
    for m in messages:
        try:
            at = datetime.fromtimestamp(m.ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        except (ValueError, OverflowError, OSError):  # a sender's ts past year 9999
            at = str(m.ts)
        urgent = "[red]urgent[/red] " if m.priority == "urgent" else ""
        out.print(f"[dim]{at}[/dim] {urgent}[cyan]{safe(m.sender)}[/cyan] → {safe(m.to)}: {safe(describe(m))}")
