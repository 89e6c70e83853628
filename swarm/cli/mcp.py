"""`swarm mcp`: serve the swarm to a model as MCP tools over stdio (see `swarm.mcp_server`)."""

from __future__ import annotations

from typing import Annotated

import typer

from swarm.cli.board import check_agent, check_caps
from swarm.cli.common import csv, run_loop, server_url, settings
from swarm.errors import ConfigError


def mcp(
    agent: Annotated[str, typer.Option("--agent", envvar="SWARM_AGENT", show_default=False,
                                       help="The agent name the model works as (default: $SWARM_AGENT).")] = "",
    can: Annotated[list[str] | None, typer.Option("--can", help="Its capabilities, e.g. docs,audit (* = any).",
                                                  show_default=False)] = None,
    role: Annotated[list[str] | None, typer.Option("--role", help="A role whose messages it reads (repeatable).",
                                                   show_default=False)] = None,
    captain: Annotated[bool, typer.Option("--captain", help="Also the captain's tools: assign, retry and cancel "
                                                            "tasks.")] = False,
) -> None:
    """Serve the swarm to a model as MCP tools over stdio, as one agent.

    The agent is registered while the session lives and the leases of the tasks it took are renewed;
    when the session ends, they go back to the board."""
    if not agent:
        raise ConfigError("--agent is missing: name the agent the model works as, for example --agent claude-1 "
                          "(or set SWARM_AGENT)")
    name = check_agent(agent, "--agent")
    caps = check_caps(can)
    if not caps:
        raise ConfigError("--can is missing: name the agent's capabilities, for example --can docs,audit "
                          "(or --can '*' for any task)")
    roles = [check_agent(r, "--role") for r in csv(role)]
    s = settings()
    server_url(s)  # start the embedded server here, where starting it is said (on stderr: stdout is the wire)

    from swarm.mcp_server import serve  # noqa: PLC0415  (the MCP SDK: only this command loads it)

    try:
        run_loop(s, lambda: serve(s, name, caps, captain=captain, roles=roles))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
