"""Lua scripts: one `.lua` file per multi-key change, loaded once per client and run by EVALSHA."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from swarm.cluster import Replication

INCLUDE = "--!include "
_FUNCTION = re.compile(r"local function ([A-Za-z_]\w*)\(")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _text(name: str) -> str:
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The text of `swarm/lua/<name>.lua` (read once per process), with its `--!include X` lines
    replaced by the text of `X.lua` less the functions of X the script never calls (see `shake`): Lua
    scripts on Redis cannot import, so shared helpers are inlined."""
    lines = _text(name).splitlines()
    own = "\n".join(line for line in lines if not line.startswith(INCLUDE))
    out = []
    for line in lines:
        if line.startswith(INCLUDE):
            included = line.removeprefix(INCLUDE).strip()
            others = [_text(other.removeprefix(INCLUDE).strip()) for other in lines
                      if other.startswith(INCLUDE) and other.removeprefix(INCLUDE).strip() != included]
            out.append(shake(source(included), "\n".join([own, *others])))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _words(code: str) -> set[str]:
    """The names in `code`, whole-line comments left out."""
    return {w for line in code.splitlines() if not line.lstrip().startswith("--") for w in _WORD.findall(line)}


def shake(library: str, user: str) -> str:
    """`library` without the top-level `local function`s that neither `user` nor the rest of the
    library it keeps names. Valkey runs a script's whole text on every call, so every function an
    included library defines costs each call (board_lib's ~70 cost a create ~6 us, most of which it
    never calls). A top-level function is `local function NAME(` at the start of a line through the
    next line that is just `end`, its body indented; a library in any other shape is returned whole.
    A name in a string or a trailing comment keeps its function too: too much kept costs time, never
    correctness."""
    lines = library.splitlines()
    parts: list[tuple[str | None, str]] = []  # (function name or None, text), in order
    i = 0
    while i < len(lines):
        found = _FUNCTION.match(lines[i])
        if found is None:
            parts.append((None, lines[i]))
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j] == "end"), None)
        if end is None or any(line and not line[0].isspace() for line in lines[i + 1:end]):
            return library
        parts.append((found.group(1), "\n".join(lines[i:end + 1])))
        i = end + 1
    bodies: dict[str, list[str]] = {}
    for name, text in parts:
        if name is not None:
            bodies.setdefault(name, []).append(text)
    wanted: set[str] = set()
    todo = _words(user) | {w for name, text in parts if name is None for w in _words(text)}
    while todo:
        word = todo.pop()
        if word in bodies and word not in wanted:
            wanted.add(word)
            for text in bodies[word]:
                todo |= _words(text)
    return "\n".join(text for name, text in parts if name is None or name in wanted)


class Scripts:
    """The scripts registered on one client; `scripts["publish"]` is an awaitable AsyncScript."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._loaded: dict[str, AsyncScript] = {}

    def __getitem__(self, name: str) -> AsyncScript:
        script = self._loaded.get(name)
        if script is None:
            # register_script computes the SHA once; EVALSHA falls back to SCRIPT LOAD on NOSCRIPT
            # (on a cluster: on every master, so a replica promoted by a failover gets it too).
            # A client asked to wait for replicas (`?wait_replicas=`) sends WAIT after each call.
            replication: Replication | None = getattr(self._redis, "replication", None)
            script = self._loaded[name] = (replication.script(self._redis, source(name)) if replication
                                           else self._redis.register_script(source(name)))
        return script
