"""Identities the server enforces: one Redis ACL user per agent, captain or viewer of a swarm.

Without ACL users a swarm is a trusted network: anyone who can reach the server may act as any
agent. With them (`swarm acl add`), the server itself tells callers apart:

- an **agent**'s user may use the swarm's keys but only its own identity key (`identity:<name>`, where
  register records the instance holding the name);
  the board scripts ask the server (`redis.acl_check_cmd`) whether the caller may write the identity
  of the agent it names, so through the board an agent acts only for itself: it cannot claim, report,
  renew, register or reap as another, nor assign, cancel, retry, edit or purge (captain-only); the
  publish script asks the same of every message's sender, so through the bus it sends only as itself;
- a **captain**'s user may write every key of the swarm, every identity included: it acts for anyone;
- a **viewer**'s user may only read (no scripts, no writes at all).

What it cannot stop: Redis runs a script with its caller's permissions, so a user allowed to run
the board scripts is allowed the raw writes they make (an `HSET` on a task, an `XADD` with another
sender). Agents you do not trust with that get no Redis user at all: they use the HTTP API
(`swarm web`) with an agent token, and only the web server holds Redis credentials.
"""

from __future__ import annotations

import inspect
import secrets
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis

from swarm.errors import ConfigError
from swarm.keys import Keys

Role = Literal["agent", "captain", "viewer"]
ROLES: tuple[Role, ...] = ("agent", "captain", "viewer")
CAPTAIN = "@captain"
"""The identity a captain's user writes besides everyone else's: what captain-only scripts check."""

# Commands every role needs to connect and name its connection (the rest of CLIENT is admin's).
_CONNECT = ["+ping", "+hello", "+auth", "+select", "+time", "+client|setname", "+client|getname", "+client|id"]


@dataclass(frozen=True, slots=True)
class Identity:
    """One ACL user of a swarm, as `swarm acl list` shows it."""

    name: str
    role: Role
    enabled: bool


def families(keys: Keys) -> list[str]:
    """Glob patterns of every key of the swarm except the identities (`task:*`, `ready`, ...)."""
    patterns: list[str] = []
    for name, member in vars(Keys).items():
        if name.startswith("_") or name in ("prefix", "stream_for", "stream", "short", "connection", "identity"):
            continue
        if isinstance(member, property):
            patterns.append(getattr(keys, name))
        elif inspect.isfunction(member):
            patterns.append(getattr(keys, name)("*"))
    return patterns


def rules(keys: Keys, name: str, role: Role, passwords: list[str]) -> list[str]:
    """The `ACL SETUSER` rules of a user of `role` (see the module doc); `passwords`: its password
    rules (`>PASSWORD`, or `#SHA256` to keep one the server already holds)."""
    base = ["reset", "on", *passwords, "resetchannels", "-@all", *_CONNECT]
    if role == "viewer":
        return [*base, "+@read", f"%R~{keys.prefix}*"]
    commands = ["+@all", "-@dangerous", "-@admin", *_CONNECT]
    if role == "captain":
        return [*base, *commands, "+client|list", f"~{keys.prefix}*"]
    return [*base, *commands, *[f"~{pattern}" for pattern in families(keys)], f"~{keys.identity(name)}"]


def role_of(keys: Keys, name: str, described: str) -> Role | None:
    """The role of a user from its `ACL LIST` line, or None when it is not one of this swarm's."""
    words = described.split()
    if f"~{keys.identity(name)}" in words or f"%W~{keys.identity(name)}" in words:  # %W~: made by earlier versions
        return "agent"
    if f"~{keys.prefix}*" in words:
        return "captain"
    if f"%R~{keys.prefix}*" in described:
        return "viewer"
    return None


def new_password() -> str:
    """A fresh random password (256 bits)."""
    return secrets.token_urlsafe(32)


class Identities:
    """The ACL users of one swarm: add, list, remove, rotate (needs an admin connection)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, name: str, role: Role) -> str:
        """Create the user (refused when it exists); its password, to show once."""
        if await self._line(name) is not None:
            raise ConfigError(f"Redis user {name!r} exists already; `swarm acl rotate {name}` gives it a new "
                              f"password, `swarm acl remove {name}` deletes it")
        password = new_password()
        await self._setuser(name, rules(self.keys, name, role, [f">{password}"]))
        return password

    async def rotate(self, name: str) -> str:
        """A new password for an existing user of this swarm (the old one stops working)."""
        identity = await self.get(name)
        password = new_password()
        await self._setuser(name, rules(self.keys, name, identity.role, [f">{password}"]))
        return password

    async def refresh(self, name: str) -> Identity:
        """Give an existing user of this swarm the rules its role has in this version (new keys, say),
        keeping its password and whether it is on."""
        identity = await self.get(name)
        described = cast(dict[str, Any], await self.redis.acl_getuser(name))
        hashes = [f"#{h.decode() if isinstance(h, bytes) else h}" for h in described.get("passwords") or []]
        user_rules = rules(self.keys, name, identity.role, hashes)
        await self._setuser(name, user_rules if identity.enabled else [*user_rules, "off"])
        return identity

    async def remove(self, name: str) -> None:
        """Delete the user (its open connections are closed by the server)."""
        await self.get(name)
        await self.redis.acl_deluser(name)
        await self._save()

    async def get(self, name: str) -> Identity:
        """One of this swarm's users, or ConfigError."""
        line = await self._line(name)
        role = None if line is None else role_of(self.keys, name, line)
        if line is None or role is None:
            raise ConfigError(f"no Redis user {name!r} for this swarm; `swarm acl list` shows them")
        return Identity(name, role, " on " in f" {line} ")

    async def all(self) -> list[Identity]:
        """This swarm's users, by name."""
        found: list[Identity] = []
        for line in await self._lines():
            name = line.split()[1]
            role = role_of(self.keys, name, line)
            if role is not None:
                found.append(Identity(name, role, " on " in f" {line} "))
        return sorted(found, key=lambda i: i.name)

    async def _lines(self) -> list[str]:
        raw: list[bytes | str] = await self.redis.acl_list()
        return [line.decode() if isinstance(line, bytes) else line for line in raw]

    async def _line(self, name: str) -> str | None:
        return next((line for line in await self._lines() if line.split()[1] == name), None)

    async def _save(self) -> None:
        """Persist the users when the server keeps an ACL file (the embedded one does)."""
        config = cast(dict[str, str], await self.redis.config_get("aclfile"))
        if config.get("aclfile"):
            await self.redis.acl_save()

    async def _setuser(self, name: str, user_rules: list[str]) -> None:
        # ACL SETUSER's rules as the server reads them (redis-py's acl_setuser wants them split up).
        await self.redis.execute_command("ACL", "SETUSER", name, *user_rules)  # type: ignore[no-untyped-call]
        await self._save()
