"""The `swarm` command: a typer sub-app per noun, thin (parse, call, print)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.main import get_command_from_info, get_command_name, get_group_from_info
from typer.models import CommandInfo, TyperInfo

from swarm.cli.common import SwarmGroup

COMMANDS: dict[str, str] = {
    "send": "swarm.cli.messages:send",
    "broadcast": "swarm.cli.messages:broadcast",
    "tail": "swarm.cli.messages:tail",
    "inbox": "swarm.cli.inbox:inbox",
    "dlq": "swarm.cli.messages:dlq",
    "server": "swarm.cli.server:server",
    "board": "swarm.cli.board:board_app",
    "pause": "swarm.cli.board:pause",
    "resume": "swarm.cli.board:resume",
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
    "acl": "swarm.cli.acl:acl",
}
"""Every command of `swarm`, in the order help lists them: name -> `module:attribute`, a typer sub-app
(a noun with its verbs) or a command function. A command's module is imported only when that command
runs, or when help or completion lists them all: `swarm task done` starts without the discovery
engine, prometheus, the demo, the web app or the MCP SDK (a shell agent runs it once per step)."""


class LazyGroup(SwarmGroup):
    """A group whose commands are built the first time they are asked for: `pending` maps each name
    to what builds it (typer's build of a command reads its whole signature)."""

    pending: dict[str, Callable[[], Any]] = {}  # noqa: RUF012  (an instance's own is set on it)

    def list_commands(self, ctx: Any) -> list[str]:
        """Every command, built or not, in registration order."""
        return [*self.commands, *(name for name in self.pending if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command `cmd_name`, built (and its module imported) on first use; None for an unknown name."""
        build = self.pending.get(cmd_name)
        if cmd_name not in self.commands and build is not None:
            self.commands[cmd_name] = build()
        return self.commands.get(cmd_name)


class RootGroup(LazyGroup):
    """`swarm` itself: its commands are `COMMANDS`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = {name: partial(_load, name, ref) for name, ref in COMMANDS.items()}


def _load(name: str, ref: str) -> Any:
    """The click command typer would have built for `ref` registered as `name` (`app.add_typer` for a
    sub-app, `app.command` for a function), with the root app's settings; a sub-app's own commands are
    built when they are asked for (`swarm task done` builds `done`, not the other twenty)."""
    module, _, attribute = ref.partition(":")
    target = getattr(import_module(module), attribute)
    options: dict[str, Any] = {"pretty_exceptions_short": app.pretty_exceptions_short,
                               "rich_markup_mode": app.rich_markup_mode}
    if not isinstance(target, typer.Typer):
        return get_command_from_info(CommandInfo(name=name, callback=target), **options)
    if target.info.cls is not SwarmGroup:  # a group class of its own: typer builds it whole
        return get_group_from_info(TyperInfo(target, name=name), suggest_commands=app.suggest_commands, **options)
    shell = copy.copy(target)  # the group itself (callback, help), without its commands
    shell.registered_commands, shell.registered_groups = [], []
    group = get_group_from_info(TyperInfo(shell, name=name, cls=LazyGroup), suggest_commands=app.suggest_commands,
                                **options)
    assert isinstance(group, LazyGroup)
    group.pending = {
        **{info.name or get_command_name(info.callback.__name__): partial(get_command_from_info, info, **options)
           for info in target.registered_commands if info.callback is not None},
        **{info.name: partial(get_group_from_info, info, suggest_commands=app.suggest_commands, **options)
           for info in target.registered_groups if isinstance(info.name, str)},
    }
    return group


app = typer.Typer(cls=RootGroup, help="swarm: a coordination bus for fleets of agents over Redis Streams.",
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
