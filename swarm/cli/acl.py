"""`swarm acl add|list|refresh|remove|rotate`: identities the server enforces (see swarm/identity.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from swarm.bus import Bus
from swarm.cli.board import check_agent
from swarm.cli.common import AsJson, app, err, out, print_json, run_with_bus
from swarm.errors import ConfigError
from swarm.identity import CAPTAIN, ROLES, Identities, Identity, Role

acl = app("Redis ACL users per agent, captain or viewer: identities the server enforces.")

RoleOpt = Annotated[str, typer.Option("--role", help="agent (acts only for itself), captain (for anyone) or "
                                                     "viewer (reads only).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write the password to this file (mode 0600) "
                                                           "instead of printing it.", show_default=False)]


def _role(value: str) -> Role:
    if value not in ROLES:
        raise ConfigError(f"--role {value!r} is not a role: use agent, captain or viewer")
    return value


def _name(value: str) -> str:
    if value == CAPTAIN:
        raise ConfigError(f"{CAPTAIN} is the captain's identity, not a user: name the captain's user, e.g. captain-1")
    return check_agent(value, "NAME")


def _give(name: str, password: str, out_file: Path | None, what: str) -> None:
    """Show the password once, or write it to a file only its owner can read."""
    if out_file is not None:
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(out_file, 0o600)
        out.print(f"{what} {name}; its password is in {out_file} (mode 0600)")
    else:
        out.print(f"{what} {name}; its password (shown once, keep it safe):")
        print(password)
    err.print(f"connect as it with SWARM_USER={name} SWARM_PASSWORD=... (or redis://{name}:PASSWORD@host:port)")


@acl.command("add")
def add(name: Annotated[str, typer.Argument(help="The agent's (or captain's, or viewer's) name.")],
        role: RoleOpt = "agent", out_file: OutOpt = None) -> None:
    """Create a Redis user for NAME with a generated password."""
    checked, chosen = _name(name), _role(role)

    async def go(bus: Bus) -> str:
        return await Identities(bus.redis, bus.keys).add(checked, chosen)

    _give(checked, run_with_bus(go), out_file, f"added {chosen}")


@acl.command("rotate")
def rotate(name: Annotated[str, typer.Argument(help="The user to give a new password.")],
           out_file: OutOpt = None) -> None:
    """A new password for NAME; the old one stops working at once."""
    checked = _name(name)

    async def go(bus: Bus) -> str:
        return await Identities(bus.redis, bus.keys).rotate(checked)

    _give(checked, run_with_bus(go), out_file, "rotated")


@acl.command("refresh")
def refresh(names: Annotated[list[str] | None, typer.Argument(help="The users to refresh (default: all of this "
                                                                   "swarm's).", show_default=False)] = None) -> None:
    """Re-apply each user's role rules as this version of swarm makes them (after an upgrade that adds
    keys); passwords are kept."""
    checked = [_name(n) for n in names or []]

    async def go(bus: Bus) -> list[Identity]:
        made = Identities(bus.redis, bus.keys)
        return [await made.refresh(n) for n in checked or [i.name for i in await made.all()]]

    done = run_with_bus(go)
    out.print(f"refreshed {', '.join(f'{i.name} ({i.role})' for i in done)}" if done else
              "no ACL users to refresh: `swarm acl list` shows them")


@acl.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The user to delete.")]) -> None:
    """Delete NAME's Redis user; its connections are closed."""
    checked = _name(name)

    async def go(bus: Bus) -> None:
        await Identities(bus.redis, bus.keys).remove(checked)

    run_with_bus(go)
    out.print(f"removed {checked}")


@acl.command("list")
def list_users(as_json: AsJson = False) -> None:
    """This swarm's Redis users and their roles (no passwords: the server keeps only hashes)."""

    async def go(bus: Bus) -> list[Identity]:
        return await Identities(bus.redis, bus.keys).all()

    found = run_with_bus(go)
    if as_json:
        print_json([{"name": i.name, "role": i.role, "enabled": i.enabled} for i in found])
    elif not found:
        out.print("no ACL users: this swarm is a trusted network (anyone who reaches the server acts as anyone); "
                  "`swarm acl add NAME --role agent` makes one")
    else:
        for i in found:
            out.print(f"{i.name:<24} {i.role:<8} {'on' if i.enabled else 'off'}")
