"""The `swarm` command: a typer sub-app per noun, thin (parse, call, print)."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

from swarm.cli.common import SwarmGroup

COMMANDS: dict[str, str] = {
    "send": "swarm.cli.messages:send",
    "broadcast": "swarm.cli.messages:broadcast",
    "tail": "swarm.cli.messages:tail",
    "inbox": "swarm.cli.inbox:inbox",
    "dlq": "swarm.cli.messages:dlq",
    "server": "swarm.cli.server:server",
    "board": "swarm.cli.board:board",
    "agents": "swarm.cli.agents:agents",
    "task": "swarm.cli.tasks:task",
    "captain": "swarm.cli.captain:captain",
    "agent": "swarm.cli.workers:agent_app",
    "up": "swarm.cli.workers:up",
    "down": "swarm.cli.workers:down",
    "ps": "swarm.cli.workers:ps",
    "discover": "swarm.cli.discovery:discover",
    "signals": "swarm.cli.discovery:signals",
    "discovery": "swarm.cli.discovery:discovery_app",
    "demo": "swarm.cli.demo:demo",
    "stats": "swarm.cli.stats:stats",
    "health": "swarm.cli.stats:health",
    "web": "swarm.cli.web:web",
    "mcp": "swarm.cli.mcp:mcp",
}
"""Every command of `swarm`, in the order help lists them: name -> `module:attribute`, a typer sub-app
(a noun with its verbs) or a command function. A command's module is imported only when that command
runs, or when help or completion lists them all: `swarm task done` starts without the discovery
engine, prometheus, the demo, the web app or the MCP SDK (a shell agent runs it once per step)."""


class LazyGroup(SwarmGroup):
    """The root group: builds a command from `COMMANDS` the first time it is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command: those registered on the app first, then `COMMANDS`."""
        return [*self.commands, *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command `cmd_name`, importing its module on first use; None for an unknown name."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _load(cmd_name, COMMANDS[cmd_name])
        return self.commands.get(cmd_name)


def _load(name: str, ref: str) -> Any:
    """The click command typer would have built for `ref` registered as `name` (`app.add_typer` for a
    sub-app, `app.command` for a function), with the root app's settings."""
    module, _, attribute = ref.partition(":")
    target = getattr(import_module(module), attribute)
    if isinstance(target, typer.Typer):
        return get_group_from_info(TyperInfo(target, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
                                   rich_markup_mode=app.rich_markup_mode, suggest_commands=app.suggest_commands)
    return get_command_from_info(CommandInfo(name=name, callback=target),
                                 pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


app = typer.Typer(cls=LazyGroup, help="swarm: a coordination bus for fleets of agents over Redis Streams.",
                  no_args_is_help=True, add_completion=True)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            found = version("swarm")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "(not installed: `pip install -e .` records the version)"
        print(f"swarm {found}")
        raise typer.Exit


@app.callback()
def _root(
    _version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                           help="Print swarm's version and exit.")] = False,
) -> None:
    """swarm: a coordination bus for fleets of agents over Redis Streams."""


def main() -> None:
    """Console-script entry point."""
    app()
